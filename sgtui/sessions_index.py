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


def session_owner(path: Path) -> int | None:
    res = read_session(path)
    st = SessionState(str(path)).apply_all(res.events)
    if st.header is None or all(r.end is not None for r in st.runs.values() if r.info is not None) and st.runs:
        return None
    pid = st.header.pid
    return pid if pid and pid != os.getpid() and _pid_is_sgtui(pid) else None


def describe(path: Path) -> str:
    try:
        res = read_session(path)
    except SessionReadError as e:
        return f"{path.name}  unreadable: {e}"
    st = SessionState(str(path)).apply_all(res.events)
    runs = [r for r in st.runs.values() if r.info is not None]
    unfinished = [r for r in runs if r.end is None]
    pid = st.header.pid if st.header else 0
    if unfinished or not runs:
        status = f"running (pid {pid})" if pid and _pid_is_sgtui(pid) else "dead (no run_end, owner gone)"
    else:
        statuses = {r.status for r in runs}
        status = "ok" if statuses == {"ok"} else ("failed" if "failed" in statuses else "cancelled")
    verdict = ""
    if runs and not unfinished:
        from sgtui.export import combined

        verdict = combined([st]).verdict.headline
    labels = ",".join(r.label for r in runs)
    return f"{path.name}  {status}  [{labels}]  {verdict}"
