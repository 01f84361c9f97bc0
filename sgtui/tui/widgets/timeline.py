"""Phase timeline: per run, one lane per step, one coloured segment per phase, with durations.

Lanes of all runs share one time scale (the longest step), so a longer bar is
a slower step wherever it sits; the setup lane (startup, warmup) has its own
scale since a cold start can be 50x a step. Segments sit at their real start
time within the lane; the running phase grows at every snapshot. Runs are
laid out side by side when the width allows and the lanes would not fit the
screen's height otherwise (at 80x24 two sessions' runs fit in two columns).

Labels never overlap: `layout_lane` (pure) places the segments, then gives
each a label that fits inside it with a blank cell before the next segment
(`roll 1.20s` shortens to `roll`, `ro`, `r` or nothing); a label is never cut
by, or run into, its neighbour's (it once read `roll 14.13so7.28sls`).

A run's lanes are its setup lane and its last `TIMELINE_STEPS` steps (`RunView.hidden_steps` are left out, one
dim line says how many): drawing a lane per step of a 2,100-step replay on every snapshot, at a height that
changed each time (a relayout), took ~2.4 s of the UI thread's GIL time from the fold (py-spy, replay_load).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from sgtui import fmt
from sgtui.tui import theme
from sgtui.viewmodel.views import RunView, SpanView
from sgtui.tui.widgets.lines import LinesWidget

WIDE_BLOCK = 48  # runs go side by side at this block width when the screen is wide enough
MIN_BLOCK = 36  # ... and down to this one when the lanes would not fit the screen's height otherwise
LANE_LABEL = 6  # "setup " / "s12   "
TOTAL = 8  # " 123.45s"


END_LANE = 1 << 30  # shutdown: after every step


def lanes_of(run: RunView) -> dict[int, list[SpanView]]:
    """Spans grouped by lane, in start order: 0 = setup (startup, warmup, initial sync), 1..N = RL steps,
    END_LANE = shutdown."""
    out: dict[int, list[SpanView]] = {}
    for sp in run.spans:
        if sp.step == 0 and sp.name in ("park", "unpark"):
            continue  # --interleave's untimed turn edges (ms): in the setup lane they would stretch it to the end
        lane = END_LANE if (sp.step == 0 and sp.name == "shutdown") else sp.step
        out.setdefault(lane, []).append(sp)
    return out


def lane_extent(spans: list[SpanView]) -> tuple[float, float]:
    start = min(sp.start for sp in spans)
    end = max(sp.start + sp.duration for sp in spans)
    return start, end - start


@dataclass(frozen=True)
class Segment:
    """One phase in a lane: cells [a, b) and the label drawn in them (never longer than fits)."""

    a: int
    b: int
    label: str
    span: SpanView


def layout_lane(spans: list[SpanView], width: int, scale: float) -> list[Segment]:
    """Segments of one lane in `width` cells at `scale` seconds per cell, in order, never overlapping.

    A segment starts at its real time (or right after the previous one, each gets at least a cell);
    its label fits inside it, one cell shorter when the next segment starts right where it ends, so
    two labels are always apart. Segments past the edge are dropped."""
    if width <= 0 or not spans:
        return []
    start, _ = lane_extent(spans)
    placed: list[tuple[SpanView, int, int]] = []
    cursor = 0
    for sp in spans:
        a = int((sp.start - start) / scale) if scale > 0 else 0
        b = int(round((sp.start - start + sp.duration) / scale)) if scale > 0 else 0
        a = max(a, cursor)
        b = min(max(b, a + 1), width)
        if a >= width:
            break
        placed.append((sp, a, b))
        cursor = b
    out = []
    for k, (sp, a, b) in enumerate(placed):
        touching = k + 1 < len(placed) and placed[k + 1][1] == b
        room = (b - a) - (1 if touching else 0)
        out.append(Segment(a, b, _segment_label(sp, room), sp))
    return out


def render_lane(spans: list[SpanView], width: int, scale: float) -> Text:
    """The lane's segments as text, `width` cells."""
    t = Text()
    if width <= 0:
        return t
    cursor = 0
    for seg in layout_lane(spans, width, scale):
        if seg.a > cursor:
            t.append(" " * (seg.a - cursor))
        sp = seg.span
        if not sp.ok and not sp.running:
            style = "bold #ffffff on #af0000"
        else:
            style = f"bold #000000 on {theme.phase_color(sp.name)}"
        t.append(seg.label.ljust(seg.b - seg.a), style=style)
        cursor = seg.b
    if cursor < width:
        t.append(" " * (width - cursor))
    return t


def _segment_label(sp: SpanView, n: int) -> str:
    """The longest of `name duration`, `duration`, `name` (long to short names), one letter, nothing
    that fits `n` cells."""
    if n <= 0:
        return ""
    mark = "▸" if sp.running else ("✗" if not sp.ok else "")
    dur = fmt.secs(sp.duration)
    for name in theme.PHASE_NAMES.get(sp.name, (sp.name,)):
        text = f"{name} {dur}{mark}"
        if len(text) <= n:
            return text
    if len(dur) + len(mark) <= n:
        return dur + mark
    for name in theme.PHASE_NAMES.get(sp.name, (sp.name,)):
        if len(name) + len(mark) <= n:
            return name + mark
    return (theme.PHASE_LETTERS.get(sp.name, "") + mark)[:n]


def run_block(run: RunView, width: int, step_scale: float, setup_scale: float, max_lanes: int | None = None,
              cache: LaneCache | None = None) -> list[Text]:
    """Lines of one run: a header, the setup lane, then one lane per step. With `cache`, a lane whose
    spans, width and scale were drawn before is that line again (the same object), not drawn anew."""
    color = theme.run_color(run.index)
    head = Text.assemble(("● ", color), (run.key, f"bold {color}"), " ",
                         (run.status, theme.STATUS_STYLES.get(run.status, "")))
    where = f" step {run.step}/{run.num_steps}" if run.num_steps else (f" step {run.step}" if run.step else "")
    head.append(where, style="dim")
    if run.backend:
        head.append(f"  {run.backend} {run.strategy}", style="dim")
    head.truncate(width, overflow="ellipsis")
    lines = [head]
    lanes = lanes_of(run)
    if not lanes:
        lines.append(Text("  (no phase yet)", style="dim"))
        return lines
    bar = max(4, width - LANE_LABEL - TOTAL)
    order = shown_lanes(lanes, max_lanes)
    hidden = run.hidden_steps + len(lanes) - len(order)
    if hidden:
        lines.append(hidden_line(hidden, width))
    for step in order:
        spans = lanes[step]
        scale = setup_scale if step in (0, END_LANE) else step_scale
        if cache is None:
            lines.append(lane_line(step, spans, bar, scale))
        else:
            lines.append(cache.line(step, spans, bar, scale))
    return lines


def shown_lanes(lanes: dict[int, list[SpanView]], max_lanes: int | None) -> list[int]:
    """The lanes drawn, in order: all of them, or with `max_lanes` the setup lane and the latest others."""
    order = sorted(lanes)
    if max_lanes is None or len(order) <= max_lanes:
        return order
    head = [0] if 0 in lanes else []
    rest = [s for s in order if s != 0]
    keep = max(0, max_lanes - len(head))
    return head + (rest[-keep:] if keep else [])


def hidden_line(hidden: int, width: int) -> Text:
    """The one line in place of the steps not drawn (older than the window, or past `max_lanes`), cut to the
    block's width: it never wraps."""
    noun = "step" if hidden == 1 else "steps"
    t = Text(f"  … {hidden:,} earlier {noun} (replay: g N seeks to one; sgtui report lists all)", style="dim",
             no_wrap=True, overflow="ellipsis")
    t.truncate(max(1, width), overflow="ellipsis")
    return t


def lane_line(step: int, spans: list[SpanView], bar: int, scale: float) -> Text:
    """One lane's line: its label, its segments in `bar` cells, its total."""
    _, total = lane_extent(spans)
    label = "setup" if step == 0 else ("end" if step == END_LANE else f"s{step}")
    line = Text(f"{label:<{LANE_LABEL - 1}} ", style="dim")
    line.append_text(render_lane(spans, bar, scale))
    running = any(sp.running for sp in spans)
    line.append(f" {fmt.secs(total):>{TOTAL - 1}}", style="bold" if running else "")
    return line


class LaneCache:
    """Lane lines drawn in the last build, keyed by everything a lane's line is drawn from (its step, its
    spans' values, the bar's width and scale); and the rows joined from cells, keyed by those cells.

    Why: a replay of a long session has thousands of lanes (7,000 at 1M events) and a snapshot changes
    one or two of them (the running phase's); drawing every lane on every snapshot took the UI thread
    ~80 ms a snapshot at 300k events, competing with the fold for the GIL (benchmarks/replay_load.py).
    Entries not used in a build are dropped at the next (`start`), so the cache holds one screen's lanes.
    """

    def __init__(self) -> None:
        self._lines: dict[tuple, Text] = {}
        self._rows: dict[tuple, tuple[list[Text], Text]] = {}
        self._old_lines: dict[tuple, Text] = {}
        self._old_rows: dict[tuple, tuple[list[Text], Text]] = {}

    def start(self) -> None:
        """A new build: what the last one used stays reachable, anything older goes."""
        self._old_lines, self._lines = self._lines, {}
        self._old_rows, self._rows = self._rows, {}

    def line(self, step: int, spans: list[SpanView], bar: int, scale: float) -> Text:
        key = (step, tuple(spans), bar, scale)
        t = self._lines.get(key)
        if t is None:
            t = self._old_lines.get(key)
            if t is None:
                t = lane_line(step, spans, bar, scale)
            self._lines[key] = t
        return t

    def row(self, cells: list[Text], block_w: int) -> Text:
        """Cells side by side, each cropped or padded to `block_w`, two blanks apart. Cells are cached lines
        (or fresh ones that never match): their identities are the key, and the entry keeps them alive."""
        key = (block_w, *map(id, cells))
        hit = self._rows.get(key) or self._old_rows.get(key)
        if hit is None:
            hit = (cells, join_row(cells, block_w))
        self._rows[key] = hit
        return hit[1]


def join_row(cells: list[Text], block_w: int) -> Text:
    line = Text()
    for j, c in enumerate(cells):
        cell = c.copy()
        cell.truncate(block_w, overflow="crop", pad=True)
        if j:
            line.append("  ")
        line.append_text(cell)
    return line


def block_height(run: RunView, max_lanes: int | None = None) -> int:
    """Lines `run_block` gives a run: its header, the line saying how many steps are not drawn (if any), then
    a line per lane drawn (or one saying none yet)."""
    lanes = lanes_of(run)
    if not lanes:
        return 2
    shown = len(shown_lanes(lanes, max_lanes))
    hidden = run.hidden_steps + len(lanes) - shown
    return 1 + (1 if hidden else 0) + shown


def choose_columns(heights: list[int], width: int, budget: int | None) -> int:
    """Run blocks side by side: as many as `WIDE_BLOCK` cells allow; more (down to `MIN_BLOCK` cells)
    while the legend and the blocks would not fit `budget` lines (the screen), so every lane of every
    run can be on screen at once."""
    n = len(heights)
    if n == 0:
        return 1
    few = max(1, min(n, width // WIDE_BLOCK))
    most = max(few, min(n, width // MIN_BLOCK))
    for cols in range(few, most + 1):
        if budget is None or 1 + sum(max(heights[i:i + cols]) for i in range(0, n, cols)) <= budget:
            return cols
    return most


def scales(runs: tuple[RunView, ...], bar: int) -> tuple[float, float]:
    step_max = setup_max = 0.0
    for r in runs:
        for step, spans in lanes_of(r).items():
            _, total = lane_extent(spans)
            if step in (0, END_LANE):
                setup_max = max(setup_max, total)
            else:
                step_max = max(step_max, total)
    bar = max(1, bar)
    return (step_max / bar if step_max > 0 else 1.0), (setup_max / bar if setup_max > 0 else 1.0)


def legend() -> Text:
    t = Text("phases: ", style="dim")
    for name in ("startup", "warmup", "rollout", "offload", "train", "reload", "weight_sync", "restart"):
        t.append(f" {theme.PHASE_NAMES[name][1]} ", style=f"#000000 on {theme.phase_color(name)}")
        t.append(" ")
    return t


_EMPTY = Text()  # the cell under a shorter block (one object: rows holding it are cached alike)


class Timeline(LinesWidget):
    """Renders the phase lanes of every run from `RunView.spans`; a snapshot repaints only the lanes
    that changed (the running phase's, mostly)."""

    DEFAULT_CSS = """
    Timeline { height: auto; width: 1fr; padding: 0 1; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.runs: tuple[RunView, ...] = ()
        self.max_lanes: int | None = None
        self._height = 1
        self._cache: tuple[tuple[int, int | None], list[Text]] | None = None
        self._budget: int | None = None  # lines the timeline may take (the screen's, less its bars)
        #: lanes and rows drawn before, per width built for (the layout's height and the lines may ask for
        #: two widths in turn): a snapshot redraws only what changed
        self._lanes: dict[int, LaneCache] = {}

    def show(self, runs: tuple[RunView, ...]) -> None:
        if len(runs) == len(self.runs) and all(a is b for a, b in zip(runs, self.runs)):
            return
        self.runs = runs
        self._cache = None
        h = self._layout_height(self.size.width or 80)
        if h != self._height:
            self._height = h
            self.refresh(layout=True)
        self.update_lines()

    def _columns(self, width: int) -> int:
        return choose_columns([block_height(r, self.max_lanes) for r in self.runs], width, self._budget)

    def _layout_height(self, width: int) -> int:
        return len(self._render_lines(max(20, width - 2)))

    def get_content_height(self, container, viewport, width: int) -> int:
        budget = max(8, viewport.height - 3) if viewport.height > 0 else None  # status, replay bar, footer
        if budget != self._budget:  # a taller or shorter screen may change the columns
            self._budget = budget
            self.call_after_refresh(self.update_lines)
        return self._layout_height(width + 2)

    def _render_lines(self, width: int) -> list[Text]:
        key = (width, self._budget)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        lines = self._build_lines(width)
        self._cache = (key, lines)
        return lines

    def _build_lines(self, width: int) -> list[Text]:
        if not self.runs:
            return [Text("no run yet", style="dim")]
        cols = self._columns(width)
        block_w = (width - (cols - 1) * 2) // cols
        step_scale, setup_scale = scales(self.runs, max(4, block_w - LANE_LABEL - TOTAL))
        cache = self._lanes.pop(width, None) or LaneCache()
        self._lanes[width] = cache  # the most recent width last
        while len(self._lanes) > 3:
            del self._lanes[next(iter(self._lanes))]
        cache.start()
        blocks = [run_block(r, block_w, step_scale, setup_scale, self.max_lanes, cache) for r in self.runs]
        lines: list[Text] = [legend()]
        for i in range(0, len(blocks), cols):
            row = blocks[i:i + cols]
            height = max(len(b) for b in row)
            for k in range(height):
                lines.append(cache.row([b[k] if k < len(b) else _EMPTY for b in row], block_w))
        return lines

    def build_lines(self, width: int) -> list[Text]:
        return self._render_lines(max(20, width - 2))


def lane_summary(run: RunView) -> dict[int, list[tuple[str, float]]]:
    """step -> [(phase, seconds)] as the lanes show them (tests compare with the phase events)."""
    out: dict[int, list[tuple[str, float]]] = {}
    for lane, spans in sorted(lanes_of(run).items()):
        out.setdefault(0 if lane == END_LANE else lane, []).extend((sp.name, sp.duration) for sp in spans)
    return out
