"""Replay: the live dashboard fed from session files, with play/pause, speed and seek by step.

Playback runs in the hub thread (it owns the clock and the fold); these keys
only send it commands, so seeking a million-event session never blocks the UI.
Runs of every session are columns side by side; sessions are aligned at their
start, and a seek aligns them at the start of the chosen step.
"""

from __future__ import annotations

from textual.binding import Binding

from sgtui.tui.screens.dialogs import AskStep
from sgtui.tui.screens.live import DashboardScreen


class ReplayScreen(DashboardScreen):
    BINDINGS = [
        Binding("space", "toggle_play", "Play"),
        Binding("s", "cycle_speed", "Speed"),
        Binding("left_square_bracket", "seek(-1)", "◀Step"),
        Binding("right_square_bracket", "seek(1)", "Step▶"),
        Binding("g", "goto_step", "Goto"),
        Binding("left_curly_bracket", "seek_start", "Start", show=False),
        Binding("right_curly_bracket", "seek_end", "End", show=False),
    ]

    def __init__(self, title: str = "") -> None:
        super().__init__(mode="replay", title=title)

    def _hub(self, *cmd: object) -> None:
        hub = self.sgtui.hub
        if hub is not None:
            hub.command(*cmd)

    def action_toggle_play(self) -> None:
        self._hub("toggle")

    def action_cycle_speed(self) -> None:
        self._hub("cycle_speed")

    def action_seek(self, delta: int) -> None:
        self._hub("seek_rel", delta)

    def action_seek_start(self) -> None:
        self._hub("seek_start")

    def action_seek_end(self) -> None:
        self._hub("seek_end")

    def action_goto_step(self) -> None:
        def done(step: int | None) -> None:
            if step is not None:
                self._hub("seek_step", step)

        self.app.push_screen(AskStep(), done)
