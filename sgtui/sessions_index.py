"""What `sgtui ls` and `sgtui stop` know about a session file: status, runs, verdict, owner process."""

from __future__ import annotations

import os
from pathlib import Path

from sgtui.session import SessionReadError, read_session
from sgtui.state import SessionState


def _pid_is_sgtui(pid: int) -> bool:
    """True if pid is alive and its command line is an sgtui process (never signal anything else)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"sgtui" in cmd


def _holds_open(pid: int, path: Path) -> bool | None:
    """Whether pid has `path` open (the orchestrator keeps its session open while it writes);
    None when its file descriptors can't be inspected (another user, no /proc)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    target = os.path.realpath(path)
    for fd in fds:
        try:
            if os.readlink(fd) == target:
                return True
        except OSError:
            continue
    return False


def session_owner(path: Path) -> int | None:
    """The live sgtui process writing this session, or None.

    Signalled only if the header's pid is alive, runs an sgtui command line, and (where /proc tells)
    holds the session file open: a reused pid never gets the signal."""
    res = read_session(path)
    st = SessionState(str(path)).apply_all(res.events)
    return _owner(path, st)


def _owner(path: Path, st: SessionState) -> int | None:
    if st.header is None:
        return None
    pid = st.header.pid
    if not pid or pid == os.getpid() or not _pid_is_sgtui(pid):
        return None
    holds = _holds_open(pid, path)
    if holds is None:  # can't tell: alive while some run has not ended
        runs = [r for r in st.runs.values() if r.info is not None]
        return pid if not runs or any(r.end is None for r in runs) else None
    return pid if holds else None


def describe(path: Path) -> str:
    try:
        res = read_session(path)
    except SessionReadError as e:
        return f"{path.name}  unreadable: {e}"
    st = SessionState(str(path)).apply_all(res.events)
    runs = [r for r in st.runs.values() if r.info is not None]
    unfinished = [r for r in runs if r.end is None]
    owner = _owner(path, st)
    if owner is not None:
        status = f"running (pid {owner})"
    elif unfinished or not runs:
        status = "dead (no run_end, owner gone)"
    else:
        statuses = {r.status for r in runs}
        status = "ok" if statuses == {"ok"} else ("failed" if "failed" in statuses else "cancelled")
    verdict = ""
    if runs and not unfinished and owner is None:
        from sgtui.export import combined

        verdict = combined([st]).verdict.headline
    labels = ",".join(r.label for r in runs)
    return f"{path.name}  {status}  [{labels}]  {verdict}"
