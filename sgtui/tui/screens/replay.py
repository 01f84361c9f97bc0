"""Replay: the live dashboard fed from session files, with play/pause, speed and seek by step.

Playback runs in the hub thread (it owns the clock and the fold); these keys
only send it commands, so seeking a million-event session never blocks the UI.
Runs of every session are columns side by side; sessions are aligned at their
start, and a seek aligns them at the start of the chosen step.

A replay opens at its first event, paused, at 1x; the bar above the footer
says so ("paused · 1x · 0:00 / 3:12 · step 0 of 1-4 · vllm-sleep1"). Space (or
`p`) plays and pauses; `[`/`]` walk every run's step starts in time order;
`g N` goes to step N of the run named in the bar (or of the column picked with
←/→), and a step that run does not have is refused with a message.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer

from sgtui.tui.screens.dialogs import AskStep
from sgtui.tui.screens.live import DashboardScreen
from sgtui.viewmodel.views import ReplayStatus, Snapshot, fmt_clock, fmt_steps
from sgtui.tui.widgets.lines import LinesWidget
from sgtui.tui.widgets.metrics_table import MetricsTable
from sgtui.viewmodel import commands as C


def replay_text(r: ReplayStatus | None) -> str:
    """The transport line: state, speed, position, the step under the playhead and the steps seek can reach."""
    if r is None or r.loading:
        return "loading…"
    state = "playing" if r.playing else ("end" if r.at_end else "paused")
    parts = [state, r.speed, f"{fmt_clock(r.position)} / {fmt_clock(r.duration)}"]
    if r.run:
        parts.append(f"step {r.step} of {fmt_steps(r.steps)}")
        n = len(r.run_steps)
        parts.append(r.run + (f" (run {r.run_index} of {n})" if n > 1 else ""))
    else:
        parts.append("no steps")
    return " · ".join(parts)


class ReplayBar(LinesWidget):
    """One line above the footer: what the replay is doing and where seek can go."""

    DEFAULT_CSS = """
    ReplayBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.status: ReplayStatus | None = None

    def show(self, status: ReplayStatus | None) -> None:
        self.status = status
        self.update_lines()

    def build_lines(self, width: int) -> list[Text]:
        r = self.status
        style = "bold #5fd75f" if r is not None and r.playing else "bold #d7af00"
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f" {replay_text(r)}", style=style)
        t.append("   space play/pause · [ ] step · g goto · ? help", style="dim")
        t.truncate(width)
        return [t]


class ReplayScreen(DashboardScreen):
    BINDINGS = [
        Binding("space", "toggle_play", "Play/pause"),
        Binding("p", "toggle_play", "Play/pause", show=False),  # the same single pause as space
        Binding("s", "cycle_speed", "Speed"),
        Binding("left_square_bracket", "seek(-1)", "◀Step"),
        Binding("right_square_bracket", "seek(1)", "Step▶"),
        Binding("g", "goto_step", "Goto"),
        Binding("left_curly_bracket", "seek_start", "Start", show=False),
        Binding("right_curly_bracket", "seek_end", "End", show=False),
    ]

    def __init__(self, title: str = "") -> None:
        super().__init__(mode="replay", title=title)
        self.picked_run: str | None = None  # a column picked with ←/→: `g` seeks in it

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if isinstance(widget, Footer):
                yield ReplayBar(id="replay-bar")
            yield widget

    def show(self, snap: Snapshot) -> None:
        super().show(snap)
        if self._ready and snap.replay is not None:
            self.query_one(ReplayBar).show(snap.replay)

    def on_metrics_table_run_selected(self, event: MetricsTable.RunSelected) -> None:
        super().on_metrics_table_run_selected(event)
        self.picked_run = event.key

    def _hub(self, cmd: C.Command) -> None:
        hub = self.host.hub
        if hub is not None:
            hub.command(cmd)

    def _status(self) -> ReplayStatus | None:
        snap = self.host.snapshot
        return snap.replay if snap is not None and snap.replay is not None and not snap.replay.loading else None

    def action_toggle_play(self) -> None:
        self._hub(C.TogglePlay())

    def action_cycle_speed(self) -> None:
        self._hub(C.CycleSpeed())

    def action_seek(self, delta: int) -> None:
        self._hub(C.SeekRel(delta))

    def action_seek_start(self) -> None:
        self._hub(C.SeekStart())

    def action_seek_end(self) -> None:
        self._hub(C.SeekEnd())

    def goto_target(self) -> tuple[str, tuple[int, ...]]:
        """The run `g` seeks in (a picked column with steps, else the run under the playhead) and its steps."""
        r = self._status()
        if r is None:
            return "", ()
        if self.picked_run and r.steps_of(self.picked_run):
            return self.picked_run, r.steps_of(self.picked_run)
        return r.run, r.steps

    def action_goto_step(self) -> None:
        run, steps = self.goto_target()
        if not run:
            self.notify("no steps to go to (yet)", severity="warning")
            return

        def done(step: int | None) -> None:
            if step is None:
                return
            if step > 0 and step not in steps:
                self.notify(f"no step {step} in {run}: its steps are {fmt_steps(steps)}",
                            title="seek refused", severity="warning", timeout=6)
                return
            self._hub(C.SeekStep(step, run))

        self.app.push_screen(AskStep(f"Go to step of {run} ({fmt_steps(steps)}; 0 = start):"), done)
