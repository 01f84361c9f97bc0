"""Messages the app's threads (hub, workers) post to the app: the only way they reach the event loop.

Contract: each is a small value; the event loop does the rest in its handler (`on_snapshot_ready`,
`on_runs_finished`, ...). Posting is non-blocking and thread-safe (`App.post_message`).
"""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from sgtui.viewmodel.views import Snapshot


class SnapshotReady(Message):
    """Latest state: a backlog collapses to the newest one."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class HubError(Message):
    """The hub could not read or fold something: shown as a notification."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class RunsFinished(Message):
    """The runs ended (attached: the orchestrator returned; detached: its process exited)."""

    def __init__(self, statuses: dict[str, str], fatal: str, exports: list[Path], export_error: str) -> None:
        super().__init__()
        self.statuses = statuses
        self.fatal = fatal
        self.exports = exports
        self.export_error = export_error


class DetachedStarted(Message):
    """The detached orchestrator process is up (pid), or could not start (error)."""

    def __init__(self, pid: int, error: str = "") -> None:
        super().__init__()
        self.pid = pid
        self.error = error


class OwnerFound(Message):
    """The sgtui process that owns a followed session (None: none alive, error says why)."""

    def __init__(self, pid: int | None, error: str = "") -> None:
        super().__init__()
        self.pid = pid
        self.error = error
