"""Checks before anything starts; each failure is one line saying what to do.

Leftover engine servers are recognised only by the markers the runner puts
into every child's environment (`SGTUI_RUN`, `SGTUI_OWNER_PID`): a process
without them is never reported or touched, whatever its name.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sgtui import gpu
from sgtui.config import RunConfig
from sgtui.runner.procs import MARKER_OWNER, MARKER_RUN, group_alive, port_free
IMPORT_NAME = {"vllm": "vllm", "sglang": "sglang"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str
    fix: str = ""


@dataclass(frozen=True)
class Leftover:
    pid: int
    pgid: int
    run: str
    owner_pid: int
    cmdline: str


def engine_version(python: str, backend: str, device: str = "cuda", timeout: float = 90.0) -> tuple[bool, str]:
    """Import the engine in its venv (as the runner will); (ok, version or the last error line)."""
    mod = IMPORT_NAME[backend]
    code = f"import importlib.metadata as m, {mod}; print(getattr({mod}, '__version__', '') or m.version('{mod}'))"
    repo = Path(__file__).resolve().parent.parent
    path = str(repo)
    if backend == "sglang" and device == "cpu":  # as the engine launches it: with the CPU compat layer
        path = str(repo / "setup" / "cpu_compat") + os.pathsep + path
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONPATH": path})
    except FileNotFoundError:
        return False, f"{python} not found"
    except subprocess.TimeoutExpired:
        return False, f"importing {mod} took more than {timeout:.0f} s"
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        return False, lines[-1] if lines else f"exit code {r.returncode}"
    return True, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "?"


def find_leftovers(proc_root: Path = Path("/proc")) -> list[Leftover]:
    """Processes carrying sgtui's marker whose owning runner is gone."""
    found = []
    for d in proc_root.iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        vals = dict(e.split(b"=", 1) for e in env if b"=" in e)
        if MARKER_OWNER.encode() not in vals:
            continue
        try:
            owner = int(vals[MARKER_OWNER.encode()])
        except ValueError:
            continue
        if owner == os.getpid() or Path(proc_root / str(owner)).exists():
            continue  # its runner is alive: not a leftover
        pid = int(d.name)
        try:
            pgid = os.getpgid(pid)
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ProcessLookupError):
            continue
        found.append(Leftover(pid, pgid, vals.get(MARKER_RUN.encode(), b"").decode(), owner, cmd[:200]))
    return found


def cleanup_leftovers(found: list[Leftover], grace: float = 10.0) -> None:
    """Stop each leftover's process group (SIGTERM, grace, SIGKILL)."""
    import time

    groups = sorted({f.pgid for f in found})
    for g in groups:
        try:
            os.killpg(g, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    alive = groups
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [g for g in alive if group_alive(g)]
    for g in alive:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_checks(runs: list[RunConfig], sessions_dir: Path, check_imports: bool = True) -> list[Check]:
    checks: list[Check] = []
    ports = sorted({(r.host, r.port) for r in runs})
    for host, port in ports:
        ok = port_free(port, host)
        checks.append(Check(f"port {port}", ok, "free" if ok else f"{host}:{port} is in use",
                            "" if ok else "stop what listens there or pick another --vllm-port/--sglang-port"))
    seen: set[tuple[str, str]] = set()
    for r in runs:
        key = (r.backend, r.python)
        if key in seen:
            continue
        seen.add(key)
        if not Path(r.python).exists():
            checks.append(Check(f"{r.backend} venv", False, f"{r.python} not found",
                                f"run `bash setup/setup.sh` or pass --{r.backend}-python"))
            continue
        if check_imports:
            ok, what = engine_version(r.python, r.backend, r.device)
            checks.append(Check(f"{r.backend} venv", ok, f"{r.backend} {what}" if ok else f"cannot import {r.backend}: {what}",
                                "" if ok else "re-run `bash setup/setup.sh` (the venv is incomplete)"))
    model = Path(runs[0].model) if runs else None
    if model is not None and (model.is_absolute() or model.exists()):
        ok = (model / "config.json").is_file()
        checks.append(Check("model", ok, str(model) if ok else f"{model}: no config.json",
                            "" if ok else "pass --model DIR with a Hugging Face model directory"))
    try:
        sessions_dir.mkdir(parents=True, exist_ok=True)
        probe = sessions_dir / f".sgtui-preflight-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        checks.append(Check("sessions dir", True, str(sessions_dir)))
    except OSError as e:
        checks.append(Check("sessions dir", False, f"{sessions_dir} not writable ({e.strerror or e})",
                            "pass --output DIR with a writable directory"))
    if any(r.device == "cuda" for r in runs):
        devs = {d.index: d for d in gpu.list_devices()}
        for r in runs:
            for g in r.gpus:
                d = devs.get(g)
                if d is None:
                    checks.append(Check(f"GPU {g}", False, "no such device", "check --gpus"))
                    continue
                need = r.gpu_memory_utilization * d.total_mib
                ok = d.free_mib >= need * 0.95
                checks.append(Check(f"GPU {g}", ok, f"{d.name}: {d.free_mib:.0f} of {d.total_mib:.0f} MiB free",
                                    "" if ok else f"{r.label} needs ~{need:.0f} MiB: free the GPU or lower "
                                                  "--gpu-memory-utilization"))
    left = find_leftovers()
    checks.append(Check("leftover servers", not left,
                        "none" if not left else "; ".join(f"pid {x.pid} (run {x.run}, pgid {x.pgid})" for x in left),
                        "" if not left else "stop them: `sgtui ls` then kill their process groups, or start "
                                            "the UI and accept its cleanup"))
    return checks
