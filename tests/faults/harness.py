"""What every fault case drives and checks: `sgtui` as a user runs it, and what it leaves behind.

A case runs the real CLI (`python -m sgtui.cli`) in a subprocess, injects its fault into real processes
(signals, a taken port, a file size limit, a closed terminal), and then asserts what the user is left with:

- `assert_readable`: the session still reads (tolerantly) and has its header;
- `assert_prefix_kept`: every complete line on disk at the moment of the fault is still there, unchanged;
- `assert_left_clean`: no process of the session alive (its runner and engine groups, anything carrying
  its markers) and its ports free.

Engines: the real vLLM CPU server where the fault is the engine's own (tests/engines.py), else the
FAULT-INJECTION stand-in behind `fault_python.sh` (real runner and orchestrator, an engine that starts
in a second and can be slowed at one endpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from sgtui.events import Error, Event, Phase, Proc, RunEnd, RunStart
from sgtui.childproc import MARKER_OWNER
from sgtui.session import SessionReadError, SessionTail, read_session
from sgtui.sessions_index import SESSION_MARKER, pid_alive
from tests.engines import TINY, VLLM_PY, port_is_free

REPO = Path(__file__).resolve().parent.parent.parent
SHIM = Path(__file__).resolve().parent / "fault_python.sh"
#: A small, fast workload: one RL step, a few short requests.
SMALL = ["--num-steps", "1", "--num-rollouts", "4", "--concurrency", "4", "--max-input-tokens", "32",
         "--max-output-tokens", "16", "--sim-train-seconds", "0.2", "--export", ""]


def fault(name: str, expected: str):
    """Mark a test as the matrix row for `name` (what happens) with `expected` (what the user gets)."""

    def mark(fn):
        fn.fault_name, fn.fault_expected = name, expected
        return fn

    return mark


def fault_env(plan: dict | None = None) -> dict[str, str]:
    """Environment for runs on the fault-injection engine (the runner itself uses the vLLM venv)."""
    return {"SGTUI_FAULT_PY": str(VLLM_PY), "SGTUI_FAULT_PLAN": orjson.dumps(plan or {}).decode()}


def model_dir(root: Path, adapters: bool = True, architecture: str = "") -> Path:
    """A copy of the tiny model by symlinks: without its adapter (no LoRA sync, no adapter copies) and/or
    with an architecture no engine knows (a real vLLM then exits at startup, after its imports)."""
    d = root / ("model" + ("" if adapters else "-noadapter") + (f"-{architecture}" if architecture else ""))
    if d.exists():
        return d
    d.mkdir(parents=True)
    for p in TINY.iterdir():
        if p.name == "adapters" and not adapters:
            continue
        if p.name == "config.json" and architecture:
            config = orjson.loads(p.read_bytes())
            config.update(model_type=architecture, architectures=[f"{architecture}ForCausalLM"])
            (d / p.name).write_bytes(orjson.dumps(config))
            continue
        (d / p.name).symlink_to(p)
    return d


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sgtui.cli", *args]


def sgtui(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), capture_output=True, text=True, cwd=kw.pop("cwd", REPO),
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, **kw)


def start(*args: str, env: dict | None = None, out: Path, **kw) -> subprocess.Popen:
    """Start sgtui in the background; stdout/stderr go to files (never a pipe nobody reads)."""
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cli_argv(*args), cwd=REPO, env={**os.environ, **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=open(out / "stdout.txt", "wb"),
                            stderr=open(out / "stderr.txt", "wb"), **kw)


def wait_for(pred, timeout: float = 120, what: str = "", poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or pred}")


def session_in(directory: Path, timeout: float = 60) -> Path:
    return wait_for(lambda: next(iter(sorted(Path(directory).glob("*.jsonl"))), None), timeout,
                    f"a session in {directory}")


class Watch:
    """Follows a session as it is written (the same SessionTail `sgtui attach` uses)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tail = SessionTail(path)
        self.events: list[Event] = []

    def poll(self) -> list[Event]:
        new = self.tail.poll()
        self.events += new
        return new

    def until(self, pred, timeout: float = 180, what: str = "") -> Event:
        """The first event (old or new) for which pred is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.poll()
            for e in self.events[seen:]:
                if pred(e):
                    return e
            seen = len(self.events)
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or pred} in {self.path}")

    def phase(self, name: str, edge: str = "start", step: int | None = None, timeout: float = 180) -> Phase:
        return self.until(lambda e: isinstance(e, Phase) and e.name == name and e.edge == edge
                          and (step is None or e.step == step), timeout, f"phase {name} {edge}")

    def engine_pgid(self, timeout: float = 60) -> int:
        return self.until(lambda e: isinstance(e, Proc) and e.role == "engine" and e.action == "start",
                          timeout, "the engine's proc event").pgid

    def runner_pid(self, timeout: float = 60) -> int:
        return self.until(lambda e: isinstance(e, RunStart), timeout, "run_start").pid

    def snapshot(self) -> bytes:
        """The complete lines on disk now (what must never be lost afterwards)."""
        data = self.path.read_bytes()
        return data[:data.rfind(b"\n") + 1]


def assert_readable(session: Path):
    """The session reads (tolerantly: a cut last line is reported, not fatal) and has its header."""
    try:
        res = read_session(session)
    except SessionReadError as e:  # pragma: no cover - this is the failure being tested for
        raise AssertionError(f"session unreadable after the fault: {e}") from None
    assert res.header is not None, res.problems
    return res


def assert_prefix_kept(session: Path, before: bytes) -> None:
    """Append-only: nothing recorded before the fault was lost or rewritten."""
    after = Path(session).read_bytes()
    assert before, "nothing was recorded before the fault"
    assert after.startswith(before), "lines recorded before the fault changed or were lost"


def ends(session: Path) -> dict[str, str]:
    return {e.run: e.status for e in read_session(session).events if isinstance(e, RunEnd)}


def errors(session: Path) -> list[Error]:
    return [e for e in read_session(session).events if isinstance(e, Error)]


def _environ(pid: int) -> dict[bytes, bytes]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return {k: v for k, _, v in (e.partition(b"=") for e in raw.split(b"\0"))}


def session_processes(session: Path, extra_owners: set[int] = frozenset()) -> list[int]:
    """Live processes of this session: its runner and engine groups, anything whose sgtui owner marker
    names its orchestrator or a runner, anything carrying its detached-session marker."""
    res = read_session(session)
    owners = {e.pid for e in res.events if isinstance(e, RunStart) and e.pid} | set(extra_owners)
    if res.header is not None and res.header.pid:
        owners.add(res.header.pid)
    groups = owners | {e.pgid for e in res.events if isinstance(e, Proc)}
    target = os.path.realpath(session).encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        pid = int(d.name)
        if not pid_alive(pid):
            continue
        env = _environ(pid)
        try:
            owner = int(env.get(MARKER_OWNER.encode(), b"0") or 0)
        except ValueError:
            owner = 0
        try:
            pgid = os.getpgid(pid)
        except OSError:
            continue
        marker = env.get(SESSION_MARKER.encode())
        if owner in owners or pgid in groups or (marker and os.path.realpath(marker) == target):
            found.append(pid)
    return found


def assert_left_clean(session: Path, ports: list[int], timeout: float = 30, extra_owners: set[int] = frozenset()):
    """No process of the session alive and its ports free (waits up to timeout for teardown to finish)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = session_processes(session, extra_owners)
        busy = [p for p in ports if not port_is_free(p)]
        if not left and not busy:
            return
        time.sleep(0.2)
    cmds = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120] for p in left
            if Path(f"/proc/{p}/cmdline").exists()}
    raise AssertionError(f"left behind: processes {cmds}, busy ports {busy}")


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def reap(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"sgtui did not exit within {timeout:.0f}s") from None
