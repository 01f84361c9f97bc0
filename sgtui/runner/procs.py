"""Process groups for engine servers and trainers: spawn, stop, port checks, log tails.

Every child runs in its own process group (a new session), so it can be
stopped with everything it spawned (vLLM's engine core, SGLang's scheduler
and detokenizer, torchrun's ranks) by one signal to the group, and never
by matching names of processes that may belong to someone else. The
markers every child carries, and whether a group lives or a port is free,
are the core's too (sgtui/childproc.py: preflight and the orchestrator ask).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sgtui import procinfo
from sgtui.childproc import MARKER_OWNER, MARKER_RUN, group_alive, port_free, stop_group  # noqa: F401 - re-exported


@dataclass
class Child:
    """A child process group with its log file."""

    role: str
    proc: subprocess.Popen
    log_path: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the child leads its own group

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 40) -> list[str]:
        return log_tail(self.log_path, n)


def spawn(role: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
          cwd: str | None = None, run_label: str = "") -> Child:
    """Start argv in a new session (own process group), stdout+stderr appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ if env is None else env)
    full_env[MARKER_RUN] = run_label or full_env.get(MARKER_RUN, "")
    full_env[MARKER_OWNER] = str(os.getpid())
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    return Child(role=role, proc=proc, log_path=log_path, argv=list(argv))


def group_cpu_seconds(pgid: int) -> float | None:
    """CPU time (user + system, seconds) used so far by the live processes of a process group (0.0: none). An
    idle engine that busy-polls shows here: on a CPU-only box it takes cores from a trainer running beside it,
    which would otherwise look like a slower trainer."""
    return procinfo.group_cpu_seconds(pgid)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, below the kernel's ephemeral range, so that a server started soon after
    can bind it: a port from the ephemeral range (the kernel's own pick) can meanwhile become the local end
    of any outgoing connection (seen: gloo's connections between trainer ranks took the port an engine was
    about to bind, PORT_IN_USE)."""
    low = _ephemeral_low()
    rnd = random.Random()
    for _ in range(64):
        port = rnd.randrange(10000, max(10001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port_free(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_free(port, host):
            return True
        time.sleep(0.1)
    return port_free(port, host)


def log_tail(path: Path, n: int = 40, max_bytes: int = 65536) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return list(deque(lines, maxlen=n))


class LogFollower:
    """Reads lines appended to a log file since the last call (for `log` events)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""

    def read_new(self, max_bytes: int = 1 << 20) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(max_bytes)
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        return data[:end].decode("utf-8", "replace").splitlines()
