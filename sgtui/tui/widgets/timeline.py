"""Phase timeline: per run, one lane per step, one coloured segment per phase, with durations.

Lanes of all runs share one time scale (the longest step), so a longer bar is
a slower step wherever it sits; the setup lane (startup, warmup) has its own
scale since a cold start can be 50x a step. Segments sit at their real start
time within the lane; the running phase grows at every snapshot. On wide
screens runs are laid out side by side.
"""

from __future__ import annotations

from rich.text import Text

from sgtui import fmt
from sgtui.tui import theme
from sgtui.tui.views import RunView, SpanView
from sgtui.tui.widgets.lines import LinesWidget

MIN_BLOCK = 48  # narrowest run block when laying runs side by side
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


def render_lane(spans: list[SpanView], width: int, scale: float) -> Text:
    """Segments of one lane in `width` cells at `scale` seconds per cell."""
    t = Text()
    if width <= 0:
        return t
    start, _ = lane_extent(spans)
    cursor = 0
    for sp in spans:
        a = int((sp.start - start) / scale) if scale > 0 else 0
        b = int(round((sp.start - start + sp.duration) / scale)) if scale > 0 else 0
        a = max(a, cursor)
        b = max(b, a + 1)
        b = min(b, width)
        if a >= width:
            break
        if a > cursor:
            t.append(" " * (a - cursor))
        n = b - a
        color = theme.phase_color(sp.name)
        if not sp.ok and not sp.running:
            style = "bold #ffffff on #af0000"
        else:
            style = f"bold #000000 on {color}"
        label = _segment_label(sp, n)
        t.append(label.ljust(n)[:n], style=style)
        cursor = b
    if cursor < width:
        t.append(" " * (width - cursor))
    return t


def _segment_label(sp: SpanView, n: int) -> str:
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


def run_block(run: RunView, width: int, step_scale: float, setup_scale: float, max_lanes: int | None = None) -> list[Text]:
    """Lines of one run: a header, the setup lane, then one lane per step."""
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
    order = sorted(lanes)
    if max_lanes is not None and len(order) > max_lanes:
        hidden = len(order) - max_lanes
        order = ([0] if 0 in lanes else []) + [s for s in order if s != 0][-(max_lanes - (1 if 0 in lanes else 0)):]
        lines.append(Text(f"  … {hidden} earlier step(s) not shown", style="dim"))
    for step in order:
        spans = lanes[step]
        _, total = lane_extent(spans)
        scale = setup_scale if step in (0, END_LANE) else step_scale
        label = "setup" if step == 0 else ("end" if step == END_LANE else f"s{step}")
        line = Text(f"{label:<{LANE_LABEL - 1}} ", style="dim")
        line.append_text(render_lane(spans, bar, scale))
        running = any(sp.running for sp in spans)
        line.append(f" {fmt.secs(total):>{TOTAL - 1}}", style="bold" if running else "")
        lines.append(line)
    return lines


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
        self._cache: tuple[int, list[Text]] | None = None

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
        return max(1, min(len(self.runs), width // MIN_BLOCK)) if self.runs else 1

    def _layout_height(self, width: int) -> int:
        return len(self._render_lines(max(20, width - 2)))

    def get_content_height(self, container, viewport, width: int) -> int:
        return self._layout_height(width + 2)

    def _render_lines(self, width: int) -> list[Text]:
        if self._cache is not None and self._cache[0] == width:
            return self._cache[1]
        lines = self._build_lines(width)
        self._cache = (width, lines)
        return lines

    def _build_lines(self, width: int) -> list[Text]:
        if not self.runs:
            return [Text("no run yet", style="dim")]
        cols = self._columns(width)
        block_w = (width - (cols - 1) * 2) // cols
        step_scale, setup_scale = scales(self.runs, max(4, block_w - LANE_LABEL - TOTAL))
        blocks = [run_block(r, block_w, step_scale, setup_scale, self.max_lanes) for r in self.runs]
        lines: list[Text] = [legend()]
        for i in range(0, len(blocks), cols):
            row = blocks[i:i + cols]
            height = max(len(b) for b in row)
            for k in range(height):
                line = Text()
                for j, b in enumerate(row):
                    cell = b[k].copy() if k < len(b) else Text()
                    cell.truncate(block_w, overflow="crop", pad=True)
                    if j:
                        line.append("  ")
                    line.append_text(cell)
                lines.append(line)
        return lines

    def build_lines(self, width: int) -> list[Text]:
        return self._render_lines(max(20, width - 2))


def lane_summary(run: RunView) -> dict[int, list[tuple[str, float]]]:
    """step -> [(phase, seconds)] as the lanes show them (tests compare with the phase events)."""
    out: dict[int, list[tuple[str, float]]] = {}
    for lane, spans in sorted(lanes_of(run).items()):
        out.setdefault(0 if lane == END_LANE else lane, []).extend((sp.name, sp.duration) for sp in spans)
    return out
