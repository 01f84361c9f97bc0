"""What `sgtui ls`, `attach` and `stop` know about a session file: status, runs, verdict, owner process.

The session file is the only link back to a detached run, so everything here
is derived from it plus what `sgtui.procinfo` says about the pid its header names. A
session is "running" only while that pid is provably the sgtui writing it:

- the header was written on this host (a pid means nothing elsewhere),
- the process is alive (not a zombie) and started before the header was
  written (a pid reused by a newer process fails this),
- its command line is an sgtui command (`sgtui`, `python -m sgtui...`),
- and it is tied to this very file: a detached orchestrator carries the
  session path in its environment (`SGTUI_SESSION`, set by `sgtui --detach`),
  any other sgtui holds the file open while it writes. Where neither can be
  read (another user's process), it counts while some run has not ended.

A session with runs that never ended and no such owner is "dead": its sgtui
was killed (kill -9, OOM killer, reboot) and nothing will ever finish it.
Nothing here imports Textual.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from sgtui import procinfo
from sgtui.session import SessionReadError, read_session
from sgtui.state import SessionState

#: Environment variable naming the session a detached orchestrator writes (its identity for `stop`).
SESSION_MARKER = "SGTUI_SESSION"
_SGTUI_TOKEN = re.compile(r"(^|[/.])sgtui($|[/.])")
#: Seconds of slack between a process's start time (clock-tick resolution) and its header's time.
_START_SLACK = 2.0


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie's run is over; only its parent has not reaped it yet)."""
    return procinfo.alive(pid)


def is_sgtui_cmdline(argv: list[str]) -> bool:
    """`sgtui ...`, `.venv/bin/sgtui`, `python -m sgtui.cli`, `python -m sgtui.tui.detach`: an sgtui command."""
    if not argv:
        return False
    if _SGTUI_TOKEN.search(os.path.basename(argv[0])):
        return True
    for i, a in enumerate(argv[1:], 1):
        if argv[i - 1] == "-m" and (a == "sgtui" or a.startswith("sgtui.")):
            return True
        if a.endswith(("/sgtui", "/sgtui/cli.py")) and i == 1:
            return True  # python /path/to/bin/sgtui
    return False


def session_runs(st: SessionState) -> list:
    """The session's runs: started ones, and ones that ended without starting (runner could not start)."""
    return [r for lbl, r in st.runs.items() if r.info is not None or (r.end is not None and lbl != "session")]


def _unfinished(st: SessionState) -> bool:
    runs = session_runs(st)
    return not runs or any(r.end is None for r in runs)


def owner_of(path: Path, st: SessionState) -> int | None:
    """The live sgtui process writing this session (see the module docstring), or None."""
    h = st.header
    if h is None or not h.pid or h.pid == os.getpid():
        return None
    if h.host and h.host != socket.gethostname():
        return None
    pid = h.pid
    if not pid_alive(pid):
        return None
    started = procinfo.start_time(pid)
    if started is not None and h.t and started > h.t + _START_SLACK:
        return None  # the pid was reused after the session began
    argv = procinfo.cmdline(pid)
    if argv is not None and not is_sgtui_cmdline(argv):
        return None
    marker = (procinfo.env_values(pid, (SESSION_MARKER,)) or {}).get(SESSION_MARKER)
    if marker:
        return pid if os.path.realpath(marker) == os.path.realpath(path) else None
    holds = procinfo.holds_open(pid, path)
    if holds is None or argv is None:  # can't tell: alive while some run has not ended
        return pid if _unfinished(st) else None
    return pid if holds else None


def owner_state(path: Path, st: SessionState) -> str:
    """For a follower (attach, the UI following a detached run): "alive", "gone" or "unknown".

    Unknown (never shown as dead): no header yet, no pid in it (sessions made by tools), or written on
    another host. A session this very process writes is alive."""
    h = st.header
    if h is None or not h.pid or (h.host and h.host != socket.gethostname()):
        return "unknown"
    if h.pid == os.getpid():
        return "alive"
    return "alive" if owner_of(path, st) is not None else "gone"


def session_owner(path: Path) -> int | None:
    """The live sgtui process writing this session, or None (raises SessionReadError if unreadable)."""
    res = read_session(path)
    st = SessionState(str(path)).apply_all(res.events)
    return owner_of(path, st)


@dataclass
class SessionInfo:
    """One session as `ls` shows it."""

    path: Path
    status: str  # running | ok | failed | cancelled | dead | unknown | unreadable
    pid: int | None = None  # the live owner (status running)
    header_pid: int = 0
    host: str = ""
    runs: list[tuple[str, str]] = field(default_factory=list)  # (label, status: ok/failed/cancelled/running/dead)
    verdict: str = ""
    error: str = ""
    mtime: float = 0.0

    @property
    def unfinished(self) -> bool:
        return self.status in ("running", "dead", "unknown")

    def line(self) -> str:
        if self.status == "unreadable":
            return f"{self.path.name}  unreadable: {self.error}"
        if self.status == "running":
            status = f"running (pid {self.pid})"
        elif self.status == "dead":
            status = (f"dead (sgtui pid {self.header_pid} gone, runs never ended)" if self.header_pid
                      else "dead (no run_end, owner gone)")
        elif self.status == "unknown" and not self.header_pid:
            status = "unknown (runs without run_end; no sgtui pid in its header to check)"
        elif self.status == "unknown":
            status = f"unknown (written on {self.host}; its pid can only be checked there)"
        else:
            status = self.status
        runs = ", ".join(f"{lbl}:{s}" for lbl, s in self.runs) or "no runs"
        tail = f"  {self.verdict}" if self.verdict else ""
        return f"{self.path.name}  {status}  [{runs}]{tail}"


def session_info(path: Path, verdict: bool = True) -> SessionInfo:
    path = Path(path)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    try:
        res = read_session(path)
    except SessionReadError as e:
        return SessionInfo(path, "unreadable", error=str(e).removeprefix(f"{path}: "), mtime=mtime)
    st = SessionState(str(path)).apply_all(res.events)
    runs = session_runs(st)
    h = st.header
    unfinished = _unfinished(st)
    state = owner_state(path, st)
    owner = (owner_of(path, st) or (h.pid if h else None)) if state == "alive" else None
    if owner is not None:
        status = "running"
    elif unfinished and state == "unknown" and h is not None:
        status = "unknown"
    elif unfinished:
        status = "dead"
    else:
        statuses = {r.status for r in runs}
        status = "ok" if statuses == {"ok"} else ("failed" if "failed" in statuses else "cancelled")
    gone = "dead" if status == "dead" else "running"
    info = SessionInfo(path, status, pid=owner, header_pid=h.pid if h else 0, host=h.host if h else "",
                       runs=[(r.label, r.status if r.end is not None else gone) for r in runs], mtime=mtime)
    if verdict and runs and not unfinished:
        try:
            from sgtui.export import combined

            info.verdict = combined([st]).verdict.headline
        except Exception as e:  # noqa: BLE001 - one bad session must not break the listing
            info.verdict = f"(no verdict: {type(e).__name__})"
    return info


def describe(path: Path) -> str:
    return session_info(path).line()


def list_sessions(directory: Path) -> list[SessionInfo]:
    """Every session in a directory, oldest first (names start with their UTC time)."""
    return [session_info(p) for p in sorted(Path(directory).glob("*.jsonl"))]


def newest_unfinished(directory: Path) -> SessionInfo | None:
    """The session `sgtui attach` opens by default: the newest one still running, else the newest whose runs
    never ended (attach then shows it dead). Newest by modification time: a running session is written to."""
    paths = sorted(Path(directory).glob("*.jsonl"), key=lambda p: p.stat().st_mtime if p.exists() else 0,
                   reverse=True)
    dead = None
    for p in paths:
        info = session_info(p, verdict=False)
        if info.status == "running":
            return info
        if dead is None and info.unfinished:
            dead = info
    return dead


def wait_gone(pid: int, timeout: float, poll: float = 0.1) -> bool:
    """Wait until pid has exited (or is a zombie); True if it did within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(poll)
    return not pid_alive(pid)
