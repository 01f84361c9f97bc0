"""The one-line header of the dashboard: what is shown, where it comes from, how far it got.

Only session time is shown (elapsed since the session started, replay
position): never the wall clock, so a replay and its snapshot tests read the
same every time.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from sgtui.labels import legend
from sgtui.viewmodel.views import Snapshot, fmt_clock
from sgtui.tui.widgets.lines import LinesWidget


def status_text(snap: Snapshot | None, *, view_paused: bool = False, selected: str | None = None,
                title: str = "", width: int = 200) -> Text:
    """The header line; on a narrow terminal the least useful parts go first (events, file, selection)."""
    parts: list[tuple[str, str, int]] = [(" sgtui ", "bold #000000 on #5fafff", 0)]  # (text, style, drop order)
    if snap is None:
        parts.append(("  waiting for events…", "dim", 1))
        return _fit(parts, width)
    if snap.mode == "replay" and snap.replay is not None:
        r = snap.replay
        if r.loading:
            parts.append((" replay: loading… ", "bold", 0))
        else:  # the transport (state, speed, position, step and range) is the bar above the footer
            state = "▶" if r.playing else ("■" if r.at_end else "❚❚")
            parts.append((f" replay {state} ", "bold #5fd75f" if r.playing else "bold #d7af00", 0))
            if snap.dead:  # the file ends with runs whose sgtui is gone: they will never finish
                parts.append((" DEAD ", "bold #ffffff on #870000", 0))
                parts.append((f" {snap.dead[0]}", "bold #ff5f5f", 3))
    elif snap.mode == "follow" and snap.dead:
        parts.append((" DEAD ", "bold #ffffff on #870000", 0))
        parts.append((f" {snap.dead[0]}", "bold #ff5f5f", 0))
    elif snap.mode == "follow":
        parts.append((" follow ", "bold #5fd75f", 0))
        parts.append((f" {fmt_clock(snap.elapsed)}", "", 3))
    else:
        parts.append((" live ", "bold #5fd75f" if not snap.all_ended else "bold", 0))
        parts.append((f" {fmt_clock(snap.elapsed)}", "", 3))
    n_runs = len(snap.runs)
    running = sum(1 for r in snap.runs if r.status == "running")
    parts.append((f"  {n_runs} run{'s' if n_runs != 1 else ''}", "", 1))
    if running:
        parts.append((f", {running} going", "#5fafff", 2))
    if view_paused:
        parts.append(("  VIEW PAUSED", "bold #000000 on #d7af00", 0))
    errors = sum(len(r.error_events) for r in snap.runs) + len(snap.session_errors)
    if errors:
        parts.append((f"  {errors} error{'s' if errors != 1 else ''}", "bold #ff5f5f", 0))
    if snap.heavy_behind and snap.heavy_age >= 3.0:
        parts.append((f"  percentiles {snap.heavy_age:.0f}s old", "#d7af00", 2))
    if selected:
        parts.append((f"  ◆ {selected}", "bold", 4))
    parts.append((f"  {snap.events:,} events", "dim", 5))
    if snap.problems:
        parts.append((f"  {len(snap.problems)} bad line{'s' if len(snap.problems) != 1 else ''}", "#d7af00", 2))
    tags = legend(snap.sources)  # several sessions: the key of the run labels' `#n` tags
    src = ("  ".join(f"{tag} {name}" for tag, name in tags) if tags
           else title or ", ".join(Path(s).name for s in snap.sources if s))
    if src:
        parts.append((f"  {src}", "dim", 6))
    return _fit(parts, width)


def _fit(parts: list[tuple[str, str, int]], width: int) -> Text:
    parts = list(parts)
    while sum(len(p[0]) for p in parts) > width:
        worst = max(range(len(parts)), key=lambda i: (parts[i][2], i))
        if parts[worst][2] == 0:
            break
        parts.pop(worst)
    t = Text(no_wrap=True, overflow="ellipsis")
    for text, style, _ in parts:
        t.append(text, style=style)
    return t


class StatusLine(LinesWidget):
    DEFAULT_CSS = """
    StatusLine { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.snap_view: Snapshot | None = None
        self.view_paused = False
        self.selected: str | None = None
        self.source_title = ""

    def show(self, snap: Snapshot | None, *, view_paused: bool = False, selected: str | None = None) -> None:
        self.snap_view, self.view_paused, self.selected = snap, view_paused, selected
        self.update_lines()  # repaints only when the line reads differently

    def build_lines(self, width: int) -> list[Text]:
        return [status_text(self.snap_view, view_paused=self.view_paused, selected=self.selected,
                            title=self.source_title, width=width)]
