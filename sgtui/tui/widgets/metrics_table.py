"""One column per run: throughput, latencies, requests, phase times; better values highlighted.

The rows the verdict compares (tok/s, TTFT, ITL, TPOT mean, E2E p99, phases) show the verdict's own
number, the steady-state mean of per-step values, so the table and the verdict never disagree under one
label; percentiles over every request pooled (as `vllm bench serve`) say "all".

A value is highlighted (green, ▲) only when `sgtui.verdict` says the run beats
every other run on that metric outside the noise band (95% interval of the
difference excludes zero), so a lucky step never looks like a win.

Why not Textual's DataTable: measured under a 1k events/s stream, every
`update_cell` invalidated the table's whole render cache, and re-rendering it
cost ~25 ms per tick at 200x50 — most of the UI's CPU. This table is a
fixed grid (rows are metrics, known in advance) drawn line by line from
precomputed cell strings (`LinesWidget`): a snapshot that changes two cells
repaints those two rows, not the table; the column cursor (left/right)
selects the run the log and cancel keys act on.

Columns never run off the edge: they narrow down to `MIN_COL` (run labels elided by `sgtui.labels`,
keeping a session tag whole), then wrap into blocks of columns under one another, as the text report's
blocks of four. With several sessions a legend line under the header says which file each `#n` tag is.
"""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.binding import Binding
from textual.message import Message

from sgtui import fmt, labels
from sgtui.state import RunSummary
from sgtui.tui import theme
from sgtui.viewmodel.views import RunView
from sgtui.tui.widgets.lines import LinesWidget
from sgtui.verdict import Verdict


def _m(s: RunSummary | None, attr: str) -> float | None:
    if s is None or not s.metrics.completed:
        return None
    return getattr(s.metrics, attr)


def _phase(s: RunSummary | None, key: str) -> float | None:
    if s is None:
        return None
    return s.phase_means.get(key)


def _phase_cell(r: RunView) -> str:
    if r.phase:
        where = f"s{r.phase_step}" if r.phase_step else "setup"
        return f"{where} {theme.phase_label(r.phase, 7) or r.phase} {fmt.secs(r.phase_elapsed, 1)}"
    if r.num_steps and r.step:
        return f"step {r.step}/{r.num_steps}"
    return f"step {r.step}" if r.step else fmt.MISSING


def _gauge(r: RunView, name: str, pct: bool = False) -> str:
    v = r.gauges.get(name)
    if v is None:
        return fmt.MISSING
    return f"{100 * v:.0f}%" if pct else f"{v:.0f}"


def _queue(r: RunView) -> str:
    a, b = r.gauges.get("running"), r.gauges.get("waiting")
    if a is None and b is None:
        return fmt.MISSING
    return f"{'—' if a is None else f'{a:.0f}'}/{'—' if b is None else f'{b:.0f}'}"


#: (row key, label, cell text, verdict metric key for highlighting or None)
ROWS: tuple[tuple[str, str, Callable[[RunView], str], str | None], ...] = (
    ("status", "status", lambda r: r.status, None),
    ("phase", "phase", _phase_cell, None),
    ("tok_step", "tok/s this step", lambda r: fmt.num(r.step_tok_s), None),
    # rows the verdict compares show its number: the steady-state mean of per-step values (step 1 apart)
    ("tok_mean", "tok/s mean", lambda r: fmt.num(_phase(r.summary, "output_throughput")), "output_throughput"),
    ("ttft_mean", "TTFT mean", lambda r: fmt.ms(_phase(r.summary, "mean_ttft_ms")), "mean_ttft_ms"),
    ("ttft_p50", "TTFT p50 all", lambda r: fmt.ms(_m(r.summary, "p50_ttft_ms")), None),
    ("ttft_p99", "TTFT p99 all", lambda r: fmt.ms(_m(r.summary, "p99_ttft_ms")), None),
    ("itl", "ITL mean", lambda r: fmt.ms(_phase(r.summary, "mean_itl_ms")), "mean_itl_ms"),
    ("tpot", "TPOT mean", lambda r: fmt.ms(_phase(r.summary, "mean_tpot_ms")), "mean_tpot_ms"),
    ("e2e_p99", "E2E p99", lambda r: fmt.ms(_phase(r.summary, "p99_e2el_ms")), "p99_e2el_ms"),
    ("requests", "requests ok/err", lambda r: f"{r.done}/{r.errors}", None),
    ("transition", "transition", lambda r: fmt.secs(_phase(r.summary, "transition")), "transition"),
    ("train", "train", lambda r: fmt.secs(_phase(r.summary, "train")), "train"),
    ("step_time", "step time", lambda r: fmt.secs(_phase(r.summary, "step_total")), "step_total"),
    ("kv", "KV cache", lambda r: _gauge(r, "kv_usage", pct=True), None),
    ("queue", "running/waiting", _queue, None),
    ("prefix", "prefix hit", lambda r: _gauge(r, "prefix_hit_rate", pct=True), None),
)
ROW_KEYS = tuple(k for k, *_ in ROWS)
LABEL_WIDTH = 16
MIN_COL, MAX_COL = 8, 18


def table_layout(n_runs: int, width: int) -> tuple[int, int]:
    """(column width, columns per block) for `n_runs` columns in `width` cells: as wide as `MAX_COL`
    allows, down to `MIN_COL`; past that the columns wrap into blocks (never cut off at the edge)."""
    n = max(1, n_runs)
    avail = max(0, width - LABEL_WIDTH)
    per_block = n if n * (MIN_COL + 1) <= avail else max(1, avail // (MIN_COL + 1))
    return max(MIN_COL, min(MAX_COL, avail // per_block - 1)), per_block


def legend_text(sources: tuple[str, ...] | list[str], width: int) -> Text | None:
    """The key of the session tags (`#1 a.jsonl  #2 b.jsonl`), elided to `width`; None for one session."""
    entries = labels.legend(sources)
    if not entries:
        return None
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append("sessions:", style="dim")
    for tag, name in entries:
        t.append(f"  {tag}", style="bold")
        t.append(f" {name}", style="dim")
    t.truncate(width, overflow="ellipsis")
    return t


def cell_text(row_key: str, run: RunView) -> str:
    """The plain text a cell shows, without the highlight mark."""
    for key, _, fn, _ in ROWS:
        if key == row_key:
            return fn(run)
    raise KeyError(row_key)


class MetricsTable(LinesWidget, can_focus=True):
    """Rows are metrics, columns are runs; left/right moves the selected run."""

    DEFAULT_CSS = """
    MetricsTable { height: auto; width: 1fr; padding: 0 1; }
    """
    BINDINGS = [
        Binding("left", "select(-1)", "◀run", show=False),
        Binding("right", "select(1)", "run▶", show=False),
    ]

    class RunSelected(Message):
        def __init__(self, key: str | None) -> None:
            super().__init__()
            self.key = key

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.run_keys: list[str] = []
        self.selected = 0
        # row key -> run key -> (text, better)
        self.cells: dict[str, dict[str, tuple[str, bool]]] = {k: {} for k in ROW_KEYS}
        self.statuses: dict[str, str] = {}
        self.sources: tuple[str, ...] = ()

    # -- data ---------------------------------------------------------------------------------
    def show(self, runs: tuple[RunView, ...], verdict: Verdict | None, force: bool = False,
             sources: tuple[str, ...] = ()) -> None:
        """`sources`: the session files, in order (their `#n` tags get a legend line when several)."""
        winners: dict[str, str] = {}
        if verdict is not None:
            for row in verdict.rows:
                if row.winner:
                    winners[row.key] = row.winner
        changed = force
        if tuple(sources) != self.sources:
            self.sources = tuple(sources)
            changed = True
            self.refresh(layout=True)
        keys = [r.key for r in runs]
        if keys != self.run_keys:
            self.run_keys = keys
            self.selected = min(self.selected, max(0, len(keys) - 1))
            changed = True
            self.refresh(layout=True)
        for r in runs:
            self.statuses[r.key] = r.status
            for row_key, _, fn, vkey in ROWS:
                value = (fn(r), vkey is not None and winners.get(vkey) == r.key)
                col = self.cells[row_key]
                if col.get(r.key) != value:
                    col[r.key] = value
                    changed = True
        if changed:
            self.update_lines()

    def get_cell(self, row_key: str, run_key: str) -> Text:
        """The cell as shown (with ' ▲' when better outside the noise)."""
        text, better = self.cells[row_key].get(run_key, ("", False))
        return Text(f"{text} ▲" if better else text)

    @property
    def selected_run(self) -> str | None:
        return self.run_keys[self.selected] if self.run_keys else None

    def select_run(self, key: str) -> None:
        if key in self.run_keys:
            self.selected = self.run_keys.index(key)
            self.update_lines()
            self.post_message(self.RunSelected(key))

    def action_select(self, delta: int) -> None:
        if self.run_keys:
            self.select_run(self.run_keys[(self.selected + delta) % len(self.run_keys)])

    # -- layout and rendering ------------------------------------------------------------------------
    def _blocks(self, width: int) -> int:
        per_block = table_layout(len(self.run_keys), width)[1]
        return max(1, -(-len(self.run_keys) // per_block))

    def get_content_height(self, container, viewport, width: int) -> int:
        blocks = self._blocks(width)
        return blocks * (len(ROWS) + 1) + (blocks - 1) + (1 if len(self.sources) > 1 else 0)

    def get_content_width(self, container, viewport) -> int:
        natural = LABEL_WIDTH + max(1, len(self.run_keys)) * (MAX_COL + 1)
        return min(natural, container.width) if container.width > 0 else natural

    def build_lines(self, width: int) -> list[Text]:
        cw, per_block = table_layout(len(self.run_keys), width)
        sel_bg = " on #1c3a5c" if self.has_focus else " on #262626"
        lines: list[Text] = []
        for first in range(0, max(1, len(self.run_keys)), per_block):
            block = list(enumerate(self.run_keys))[first:first + per_block]
            if first:
                lines.append(Text())
            out = Text(no_wrap=True, overflow="crop")
            lines.append(out)
            out.append(f"{'metric':<{LABEL_WIDTH}}", style="bold dim")
            for i, k in block:
                label = labels.elide(k, cw)
                style = f"bold {theme.run_color(i)}" + (sel_bg + " underline" if i == self.selected else "")
                out.append(" ")
                out.append(f"{label:>{cw}}", style=style)
            if not first and (legend := legend_text(self.sources, width)) is not None:
                lines.append(legend)
            for n, (row_key, label, _, _) in enumerate(ROWS):
                out = Text(no_wrap=True, overflow="crop")
                lines.append(out)
                stripe = " on #1a1a1a" if n % 2 else ""
                out.append(f"{label:<{LABEL_WIDTH}}", style="bold" + stripe)
                for i, k in block:
                    text, better = self.cells[row_key].get(k, ("", False))
                    shown = f"{text} ▲" if better else text
                    if len(shown) > cw:
                        shown = shown[: cw - 1] + "…"
                    bg = sel_bg if i == self.selected else stripe
                    if better:
                        style = theme.BETTER_STYLE
                    elif row_key == "status":
                        style = theme.STATUS_STYLES.get(text, "")
                    else:
                        style = ""
                    out.append(" ", style=stripe)
                    out.append(f"{shown:>{cw}}", style=(style + bg).strip())
        return lines

    def on_focus(self) -> None:
        self.update_lines()

    def on_blur(self) -> None:
        self.update_lines()
