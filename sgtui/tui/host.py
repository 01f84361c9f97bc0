"""What the screens may ask of the app: a small Protocol, so screens never import `sgtui.tui.app`.

Contract: `SgtuiApp` implements `UiHost`; a screen reaches it with `host_of(self)`. The app imports
the screens (to push them); the screens import only this module, so there is no import cycle
(tests/test_import_contracts.py walks the imports). Anything a screen needs from the app that is
not listed here is a sign the screen is doing the app's work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from sgtui.config import RunConfig
    from sgtui.viewmodel.hub import Hub
    from sgtui.viewmodel.launch_model import LaunchOptions
    from sgtui.viewmodel.preflight_view import PreflightResult
    from sgtui.viewmodel.views import Snapshot


class UiHost(Protocol):
    """The app as the screens see it."""

    # what to draw
    snapshot: Snapshot | None  # the latest snapshot the hub sent (None before the first)
    hub: Hub | None  # playback commands and the sparkline width go to the hub directly

    def ack_snapshot(self) -> None:
        """The snapshot shown is on screen: the hub may build the next one."""

    def files_info(self) -> list[tuple[str, str]]:
        """(what, where) of the session, reports and log, for the verdict."""

    # what the keys may do now
    def can_cancel(self) -> bool: ...

    def can_detach_ui(self) -> bool: ...

    def action_cancel_runs(self) -> None:
        """Ask, then stop the runs cleanly (whichever process holds them)."""

    def action_detach_ui(self) -> None:
        """Leave the UI with the runs going (when they run in a process of their own)."""

    def show_verdict(self) -> None: ...

    # the launch form (run_preflight and session_path_for are called from worker threads: IO)
    def run_preflight(self, runs: list[RunConfig], output: str) -> PreflightResult: ...

    def session_path_for(self, runs: list[RunConfig], output: str | Path) -> Path: ...

    def start_from_launch(self, runs: list[RunConfig], opts: LaunchOptions, session_path: Path) -> None: ...


def host_of(node: DOMNode) -> UiHost:
    """The app a screen or widget belongs to, typed as the host the screens may use."""
    return cast("UiHost", node.app)
