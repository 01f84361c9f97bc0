"""What the core and the runner both know about sgtui's child processes: their markers, groups and ports.

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
import socket

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
