"""The dashboard: GPU panel, metrics table, phase timeline, logs; fed only by snapshots.

Layout follows the terminal: on a wide screen (>= 150x36) the table and the
timeline sit side by side and each GPU gets three lines; otherwise
everything stacks in one scrolling column, GPUs get one line each, and Tab
moves focus (and the view) from pane to pane. The screen does no IO and no
folding: `show(snapshot)` is all it gets.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer

from sgtui.tui.host import UiHost, host_of
from sgtui.viewmodel.views import Snapshot
from sgtui.tui.widgets.gpu_panel import GpuPanel
from sgtui.tui.widgets.log_pane import LogPanes
from sgtui.tui.widgets.metrics_table import MetricsTable
from sgtui.tui.widgets.status_line import StatusLine
from sgtui.tui.widgets.timeline import Timeline

WIDE_MIN = (150, 36)
COMPACT_GPU_BELOW = (100, 36)


class FocusPane(Container):
    """A focusable box around a pane, so Tab can bring it into view."""

    can_focus = True
    DEFAULT_CSS = """
    FocusPane { height: auto; width: 1fr; border-left: blank; }
    FocusPane:focus { border-left: thick $accent; }
    """


class DashboardScreen(Screen):
    """Live and follow mode; `ReplayScreen` adds playback keys."""

    DEFAULT_CSS = """
    DashboardScreen #body { height: 1fr; }
    DashboardScreen #middle { height: auto; layout: vertical; }
    DashboardScreen.-wide #middle { layout: horizontal; }
    DashboardScreen.-wide #table-pane { width: auto; max-width: 60%; }
    DashboardScreen.-wide MetricsTable { width: auto; }
    DashboardScreen.-wide #timeline-pane { width: 1fr; }
    DashboardScreen #table-pane { height: auto; }
    DashboardScreen .pane-title { height: 1; color: $text-muted; text-style: bold; padding: 0 1; }
    """
    BINDINGS = [
        Binding("p", "pause_view", "Pause"),
        Binding("tab", "app.focus_next", "Focus", show=True),
        Binding("l", "open_log", "Log"),
        Binding("v", "verdict", "Verdict"),
        Binding("c", "cancel_runs", "Cancel"),
        Binding("d", "detach_ui", "Detach"),  # shown only while runs go in a process of their own
        Binding("q", "app.request_quit", "Quit"),
        Binding("question_mark,f1,h", "app.help", "Help"),
    ]

    def __init__(self, mode: str = "live", title: str = "") -> None:
        super().__init__()
        self.mode = mode
        self.title_text = title
        self.view_paused = False
        self.snapshot: Snapshot | None = None
        self._ready = False
        self._keys_shown: tuple[bool, bool] | None = None

    @property
    def host(self) -> UiHost:
        return host_of(self)

    def compose(self) -> ComposeResult:
        status = StatusLine(id="status")
        status.source_title = self.title_text
        yield status
        with VerticalScroll(id="body"):
            with FocusPane(id="gpu-pane"):
                yield GpuPanel(id="gpu")
            with Container(id="middle"):
                with FocusPane(id="table-pane"):
                    yield MetricsTable(id="table")
                with FocusPane(id="timeline-pane"):
                    yield Timeline(id="timeline")
            yield LogPanes(id="logs")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._ready = True
        self._apply_size(self.size.width, self.size.height)
        self.query_one(MetricsTable).focus()
        snap = self.host.snapshot
        if snap is not None:
            self.show(snap)

    def on_screen_resume(self) -> None:
        snap = self.host.snapshot
        if snap is not None and snap is not self.snapshot:
            self.show(snap)

    def on_resize(self, event: events.Resize) -> None:
        self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        self.set_class(width >= WIDE_MIN[0] and height >= WIDE_MIN[1], "-wide")
        wide = width >= WIDE_MIN[0] and height >= WIDE_MIN[1]
        logs = self.query_one(LogPanes)
        logs.set_class(wide, "-wide")
        if wide and height >= 45:
            logs.set_expand_new(True)
        gpu = self.query_one(GpuPanel)
        gpu.set_compact(width < COMPACT_GPU_BELOW[0] or height < COMPACT_GPU_BELOW[1])
        hub = self.host.hub
        if hub is not None:
            hub.set_spark_width(gpu.spark_width(width - 3))

    # -- data ----------------------------------------------------------------------------
    def show(self, snap: Snapshot) -> None:
        """Render one snapshot (skipped while the view is paused: the hub keeps folding)."""
        if self.view_paused or not self._ready:
            return  # before on_mount the widgets are not there; on_mount shows the latest snapshot
        self.snapshot = snap
        try:
            table = self.query_one(MetricsTable)
        except NoMatches:  # being torn down (app exiting)
            return
        keys = (self.host.can_cancel(), self.host.can_detach_ui())
        if keys != self._keys_shown:  # runs started or ended (a followed session): footer keys follow
            self._keys_shown = keys
            self.refresh_bindings()
        with self.app.batch_update():
            table.show(snap.runs, snap.verdict, sources=snap.sources)
            self.query_one(GpuPanel).show(snap.gpus, snap.runs)
            self.query_one(Timeline).show(snap.runs)
            logs = self.query_one(LogPanes)
            logs.show(snap.runs, epoch=snap.replay.epoch if snap.replay is not None else 0)
            logs.set_class(len(snap.runs) == 1, "-one")
            logs.set_class(len(snap.runs) in (2, 4), "-two")
            self.query_one(StatusLine).show(snap, view_paused=self.view_paused, selected=table.selected_run)

    def on_metrics_table_run_selected(self, event: MetricsTable.RunSelected) -> None:
        if self.snapshot is not None:
            self.query_one(StatusLine).show(self.snapshot, view_paused=self.view_paused,
                                            selected=self.query_one(MetricsTable).selected_run)

    # -- actions ---------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_runs":
            return self.host.can_cancel()
        if action == "detach_ui":
            return self.host.can_detach_ui()  # hidden unless runs go in a process of their own
        return True

    def action_detach_ui(self) -> None:
        self.host.action_detach_ui()

    def action_pause_view(self) -> None:
        self.view_paused = not self.view_paused
        status = self.query_one(StatusLine)
        status.show(self.snapshot, view_paused=self.view_paused, selected=self.query_one(MetricsTable).selected_run)
        if not self.view_paused and self.host.snapshot is not None:
            self.show(self.host.snapshot)
        self.host.ack_snapshot()

    def action_open_log(self) -> None:
        key = self.query_one(MetricsTable).selected_run
        if key is None:
            self.notify("no run yet", severity="warning")
            return
        pane = self.query_one(LogPanes).toggle(key)
        if pane is not None and not pane.collapsed:
            pane.call_after_refresh(pane.scroll_visible)

    def action_verdict(self) -> None:
        self.host.show_verdict()

    def action_cancel_runs(self) -> None:
        self.host.action_cancel_runs()

    def selected_run(self) -> str | None:
        return self.query_one(MetricsTable).selected_run
