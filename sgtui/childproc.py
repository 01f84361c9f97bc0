"""What the core and the runner both know about sgtui's child processes: their markers, groups and ports,
how a group is stopped and how a child dies with its parent.

The runner puts the environment markers into every child it spawns (engine
servers, trainers) and the orchestrator into every runner, so that preflight
can recognise servers an earlier sgtui run left behind and never touch anything
else. Whether a process group still lives and whether a port is free to bind
are asked by both sides too (the orchestrator's teardown and preflight; the
runner's engine start and stop). The runner imports this inside the engine
venvs, so it imports nothing but the standard library.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

#: Environment markers put into every child: the run's label, and the pid of the process that started it.
MARKER_RUN = "SGTUI_RUN"
MARKER_OWNER = "SGTUI_OWNER_PID"


def group_alive(pgid: int) -> bool:
    """A process of the group still exists (one we may not signal counts as alive: it is not ours to call gone)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on (host, port): a server started now can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def stop_group(pgid: int, grace: float = 10.0, proc: subprocess.Popen | None = None) -> bool:
    """SIGTERM the group, wait up to `grace`, then SIGKILL. Returns True if SIGKILL was needed."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(proc)
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(proc)
        if not group_alive(pgid):
            return False
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and group_alive(pgid):
        _reap(proc)
        time.sleep(0.05)
    _reap(proc)
    return True


def _reap(proc: subprocess.Popen | None) -> None:
    if proc is not None:
        try:
            proc.poll()
        except Exception:  # noqa: BLE001 - reaping is best effort
            pass


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved here, not in the forked child
_PR_SET_PDEATHSIG = 1


def parent_death_signal() -> bool:
    """Can a child be made to die with its parent here (Linux's PR_SET_PDEATHSIG)?"""
    return _PRCTL is not None


def die_with_parent() -> None:
    """preexec_fn of a child that must not outlive the process that started it: the kernel sends it SIGTERM
    when that process dies, however it dies (kill -9, the OOM killer). A runner then cancels as on `sgtui
    stop` and stops its engine and trainer groups, so a killed sgtui leaves no engine holding GPU memory (its
    run_end goes to a closed pipe: the session stays without it, and `sgtui ls` calls it dead); a session
    reader's helper (`sgtui.session_split`) just ends. A single async-signal-safe call, no locks."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
