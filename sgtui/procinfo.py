"""Every question sgtui asks about another process, answered in one place, by psutil.

`sessions_index` (is a session's sgtui still alive?), `preflight` (leftover
servers by their environment markers), `host` (CPU of a run's process groups)
and the runner (`procs.group_cpu_seconds`) all ask here. A process that is
gone, a zombie where that matters, or one we may not inspect (another user's)
gives the "can't tell" answer each function names (None, False or nothing),
never an exception. The runner imports this inside the engine venvs, so it
imports nothing but psutil and the standard library.

Process groups are not a psutil question (it has no call for them): they come
from `os.getpgid`, which also makes a scan of the host cheap, a system call per
process, with psutil asked only about the processes of the groups wanted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Collection, Iterator

import psutil


def _text(s: str) -> str:
    """psutil decodes /proc's bytes with surrogateescape; show undecodable bytes as U+FFFD, as everywhere else."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie's run is over; only its parent has not reaped it)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def start_time(pid: int) -> float | None:
    """Unix time the process started (clock-tick resolution), None when gone or unreadable."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def cmdline(pid: int) -> list[str] | None:
    """The process's arguments (empty ones dropped; [] for a zombie), None when gone or unreadable."""
    try:
        return [_text(a) for a in psutil.Process(pid).cmdline() if a]
    except psutil.ZombieProcess:
        return []
    except psutil.Error:
        return None


def env_values(pid: int, keys: Collection[str]) -> dict[str, str] | None:
    """The values of those of `keys` the process's environment holds ({} if none), None if it can't be read."""
    try:
        env = psutil.Process(pid).environ()
    except psutil.Error:
        return None
    return {k: _text(env[k]) for k in keys if k in env}


def holds_open(pid: int, path: str | os.PathLike) -> bool | None:
    """Whether the process has the regular file `path` open; None when its files can't be inspected."""
    target = os.path.realpath(path)
    try:
        return any(f.path == target for f in psutil.Process(pid).open_files())
    except psutil.Error:
        return None


def pgid(pid: int) -> int | None:
    """The process group of pid, None when gone."""
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def group_members(group: int) -> list[int]:
    """Every process (zombies included) whose process group is `group`."""
    return [pid for pid in psutil.pids() if pgid(pid) == group]


def with_env(keys: Collection[str], skip: Collection[int] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """(pid, the values of `keys` it carries) for every process whose environment holds one of `keys`.

    Processes whose environment can't be read (another user's) are passed over, as are the pids in `skip`."""
    for pid in psutil.pids():
        if pid in skip:
            continue
        marks = env_values(pid, keys)
        if marks:
            yield pid, marks


@dataclass(frozen=True)
class ProcCpu:
    """One process of a group scan: its group, when it started (seconds after boot), CPU used (user + system s)."""

    pgid: int
    started: float
    cpu: float


def group_cpu(groups: Collection[int], extra_pids: Collection[int] = ()) -> dict[int, ProcCpu]:
    """One pass over the host's processes: every process (zombies included) whose group is in `groups`, plus
    `extra_pids`, by pid. A process that exits meanwhile is left out."""
    out: dict[int, ProcCpu] = {}
    try:
        pids = psutil.pids()
    except OSError:
        return out
    boot = None
    for pid in pids:
        g = pgid(pid)
        if g is None or (g not in groups and pid not in extra_pids):
            continue
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                started = p.create_time()
            if boot is None:
                boot = psutil.boot_time()
        except (psutil.Error, OSError):
            continue
        out[pid] = ProcCpu(g, started - boot, t.user + t.system)
    return out


def group_cpu_seconds(group: int) -> float:
    """CPU time (user + system, seconds) used so far by the processes of a process group (0.0: none)."""
    return sum(p.cpu for p in group_cpu({group}).values())
