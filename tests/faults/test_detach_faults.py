"""The terminal goes away: SIGHUP with and without --detach, the detached orchestrator killed -9, and
what `sgtui ls`, `attach` (headless and the UI) and `stop` make of each.

The hangup is real: sgtui runs on a pseudo-terminal that is its controlling terminal, and the test
closes the terminal's master side, as sshd does when the connection drops; the kernel sends SIGHUP to
the session. Engines are the FAULT-INJECTION vLLM stand-in (fault_python.sh): what is tested is the
process tree and the session file, not the engine.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import termios
import threading
import time
from pathlib import Path

from sgtui import preflight
from sgtui.headless import EXIT_DEAD
from tests.engines import free_port, needs_vllm
from tests.faults.harness import (REPO, SHIM, SMALL, Watch, assert_left_clean, assert_prefix_kept, assert_readable,
                                  cli_argv, ends, fault, fault_env, model_dir, reap, sgtui, wait_for)

pytestmark = [needs_vllm]


def run_args(tmp_path, port, *extra):
    return ["--no-ui", "--run", f"vllm:sleep1@{SHIM}", "--model", str(model_dir(tmp_path)), "--vllm-port", str(port),
            "-o", str(tmp_path / "sessions"), "--skip-preflight", *SMALL, *extra]


class Terminal:
    """A pseudo-terminal that is the controlling terminal of the process started on it; `hang_up()`
    closes its master side (an SSH connection dropping): the kernel sends SIGHUP to that session."""

    def __init__(self, argv: list[str], env: dict) -> None:
        self.master, slave = pty.openpty()
        self.output = bytearray()

        def take_terminal():  # runs in the child after setsid(): make the pty its controlling terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
                                     env={**os.environ, **env}, start_new_session=True, preexec_fn=take_terminal)
        os.close(slave)
        self._hang_up = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Drain the terminal (a full one would block sgtui's writes). The master is closed here, between
        reads: closing it while a read() is in flight would keep the terminal open, and no hangup happen."""
        try:
            while not self._hang_up.is_set():
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    break
                if not data:
                    break
                self.output += data
        finally:
            os.close(self.master)

    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r\n", "\n")

    def hang_up(self) -> None:
        self._hang_up.set()
        self._reader.join(5)


@fault("SIGHUP without --detach (SSH drop)", "runs cancelled cleanly: run_end cancelled, nothing left, port free")
def test_hangup_without_detach_cancels_cleanly(tmp_path, observed):
    port = free_port()
    term = Terminal(cli_argv(*run_args(tmp_path, port, "--sim-train-seconds", "60")), fault_env())
    session = wait_for(lambda: next(iter((tmp_path / "sessions").glob("*.jsonl")), None), 60, "the session")
    w = Watch(session)
    w.phase("train", "start", step=1)
    before = w.snapshot()
    term.hang_up()
    rc = reap(term.proc, 60)
    assert rc != -signal.SIGHUP, "sgtui died of the hangup instead of cancelling"
    assert_readable(session)
    assert_prefix_kept(session, before)
    assert ends(session) == {"vllm-sleep1": "cancelled"}
    w.poll()
    train_end = [e for e in w.events if e.kind == "phase" and e.name == "train" and e.edge == "end"]
    assert train_end and not train_end[0].ok and "cancelled" in train_end[0].detail
    assert_left_clean(session, [port])
    observed(f"sgtui exit {rc} (not killed by the signal); train ended ok=False ({train_end[0].detail}); "
             "run_end cancelled; nothing left, port free")


@fault("SIGHUP with --detach (SSH drop)", "the detached orchestrator is not touched: runs go on and end ok; "
       "ls shows it running meanwhile, attach follows it to the end")
def test_hangup_with_detach_runs_go_on(tmp_path, observed):
    port = free_port()
    # the shell on the terminal runs `sgtui --detach`, then waits like a login shell would
    cmd = " ".join(f"'{a}'" for a in cli_argv(*run_args(tmp_path, port, "--detach", "--sim-train-seconds", "3",
                                                         "--export", "txt"))) + "; sleep 600"
    term = Terminal(["sh", "-c", cmd], fault_env())
    out = wait_for(lambda: re.search(r"pid: (\d+)", term.text()), 60, "the detached pid")
    pid = int(out.group(1))
    session = Path(re.search(r"session: (\S+)", term.text()).group(1))
    session = session if session.is_absolute() else REPO / session
    w = Watch(session)
    w.phase("train", "start", step=1)
    term.hang_up()
    assert reap(term.proc, 30) == -signal.SIGHUP  # the terminal's session got the hangup ...
    assert Path(f"/proc/{pid}").exists()  # ... the detached orchestrator did not
    ls = sgtui("ls", str(tmp_path / "sessions"))
    assert f"running (pid {pid})" in ls.stdout, ls.stdout
    t0 = time.monotonic()
    att = sgtui("attach", "--no-ui", "-o", str(tmp_path / "sessions"), timeout=120)
    assert att.returncode == 0, att.stderr
    assert f"sgtui pid {pid} is writing it" in att.stderr and "vllm-sleep1: ok" in att.stderr
    assert "VERDICT" in att.stdout
    assert ends(session) == {"vllm-sleep1": "ok"}
    assert session.with_suffix(".txt").exists(), "the detached orchestrator writes the reports at the end"
    log = (session.with_suffix(".d") / "orchestrator.log").read_text()
    assert "vllm-sleep1 step 1 train" in log
    assert_left_clean(session, [port])
    observed(f"shell on the terminal died of SIGHUP; orchestrator pid {pid} kept going; ls: running (pid {pid}); "
             f"attach --no-ui followed it {time.monotonic() - t0:.0f}s to run_end ok, exit 0; reports written")


@fault("orchestrator killed -9 while detached",
       "ls and attach show the session dead (never running forever); stop refuses; the orphaned runner "
       "stops its engine by itself (no leftover for `sgtui cleanup`); nothing recorded lost")
async def test_detached_orchestrator_killed_9_shows_dead(tmp_path, observed):
    port = free_port()
    r = sgtui(*run_args(tmp_path, port, "--detach", "--sim-train-seconds", "60"), env=fault_env())
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"pid: (\d+)", r.stdout).group(1))
    session = Path(re.search(r"session: (\S+)", r.stdout).group(1))
    session = session if session.is_absolute() else REPO / session
    w = Watch(session)
    runner = w.runner_pid()
    w.phase("train", "start", step=1)
    before = w.snapshot()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
             10, "the orchestrator to die")
    from sgtui import portlock

    # The leader thread shows Z while the kernel still tears down its other threads (NVML sampler, workers);
    # the lock goes with the last of them, so "dead" is when the lock is free, soon after
    wait_for(lambda: portlock.holder(port) is None, 30, "the kernel to drop the dead sgtui's port lock")
    try:
        ls = sgtui("ls", str(tmp_path / "sessions"))
        assert f"dead (sgtui pid {pid} gone, runs never ended)  [vllm-sleep1:dead]" in ls.stdout, ls.stdout
        att = sgtui("attach", "--no-ui", "-o", str(tmp_path / "sessions"), timeout=60)
        assert att.returncode == EXIT_DEAD and "dead session" in att.stderr, att.stderr
        stop = sgtui("stop", str(session))
        assert stop.returncode == 2 and "no live sgtui process owns this session (status: dead" in stop.stderr
        # the dashboard on the same session: the run shows dead, nothing looks running
        from sgtui.tui.app import make_app

        from tests.tui.tui_helpers import screen_text
        from tests.tui.tui_helpers import wait_for as ui_wait

        app = make_app("replay", paths=[session], follow=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await ui_wait(pilot, lambda: app.snapshot is not None and app.snapshot.dead, timeout=20,
                          what="the follow UI to call the session dead")
            assert [r.status for r in app.snapshot.runs] == ["dead"] and app.snapshot.all_ended
            top = screen_text(app).splitlines()[0]
            assert "DEAD" in top and f"sgtui pid {pid} is gone" in top
            assert not app.can_cancel() and not app.can_detach_ui()
            await pilot.press("q")
        app.shutdown()
        # the runner learns of its orchestrator's death from the kernel (PR_SET_PDEATHSIG) and stops its engine:
        # nothing is left for `sgtui cleanup` to find
        assert_left_clean(session, [port])
        assert not [x for x in preflight.find_leftovers() if x.owner_pid in (pid, runner)]
    finally:
        preflight.cleanup_leftovers([x for x in preflight.find_leftovers() if x.owner_pid == pid], grace=10)
    assert_prefix_kept(session, before)
    assert_readable(session)
    assert ends(session) == {}  # nobody could write run_end: that is what "dead" means
    assert_left_clean(session, [port])
    observed(f"ls: dead (sgtui pid {pid} gone); attach --no-ui exit {EXIT_DEAD} 'dead session'; UI: run 'dead', "
             "DEAD in the header, cancel disabled; stop refuses; the runner got SIGTERM from the kernel and "
             "stopped its engine: no leftover, port free")


@fault("sgtui stop on a detached session", "SIGTERM to the verified orchestrator only; runs cancelled cleanly; "
       "stop waits and reports the final status")
def test_stop_detached(tmp_path, observed):
    port = free_port()
    r = sgtui(*run_args(tmp_path, port, "--detach", "--sim-train-seconds", "60"), env=fault_env())
    assert r.returncode == 0, r.stderr
    pid = int(re.search(r"pid: (\d+)", r.stdout).group(1))
    session = Path(re.search(r"session: (\S+)", r.stdout).group(1))
    session = session if session.is_absolute() else REPO / session
    w = Watch(session)
    w.phase("train", "start", step=1)
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"SGTUI_SESSION={session.absolute()}".encode() in env  # the marker `stop` checks
    stop = sgtui("stop", str(session), timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert f"sent SIGTERM to sgtui pid {pid}" in stop.stderr
    assert "cancelled" in stop.stdout and "[vllm-sleep1:cancelled]" in stop.stdout
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert ends(session) == {"vllm-sleep1": "cancelled"}
    assert_left_clean(session, [port])
    observed(f"stop: {stop.stdout.strip()[:100]}; nothing left, port free")


def test_detach_refuses_with_the_reason_when_the_orchestrator_cannot_start(tmp_path):
    """A port another sgtui holds: the detached child refuses; `sgtui --detach` says why, exit 2."""
    from sgtui import portlock

    port = free_port()
    locks = portlock.acquire([port], "elsewhere.jsonl")
    try:
        r = sgtui(*run_args(tmp_path, port, "--detach"), env=fault_env())
    finally:
        locks.release()
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "detached orchestrator did not start" in lines[0] and f"port {port} is taken by another sgtui" in lines[0]
    assert not any(e for e in (tmp_path / "sessions").glob("*.jsonl"))
