"""The verdict: who wins per step, by how much, whether it is outside the noise, and why.

Everything comes from `sgtui.verdict` over the runs' `RunSummary`s (the same
numbers the exports print): per metric the mean of every run, each other
run's % difference to the best with its 95% noise band, and the per-phase
breakdown that says where the runner-up loses its time. Below that, where
the session and the reports were written.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from sgtui import fmt
from sgtui.findings import finding_line
from sgtui.state import RunSummary
from sgtui.tui import theme
from sgtui.tui.host import host_of
from sgtui.viewmodel.views import RunView, Snapshot
from sgtui.verdict import MetricRow, Verdict

PHASE_ORDER = ("rollout", "offload", "train", "reload", "weight_sync", "restart", "transition", "step_total")
PHASE_LABELS = {"weight_sync": "weight sync", "step_total": "total step", "transition": "transition"}


def _metric_cell(row: MetricRow, run: str) -> Text:
    mean = row.means.get(run)
    if mean is None:
        return Text(fmt.MISSING, style="dim")
    value = fmt.unit_value(mean, row.unit)
    if run == row.best:
        style = theme.BETTER_STYLE if row.winner == run else "bold"
        return Text.assemble((value, style), (" best" + (" ▲" if row.winner == run else ""), style))
    t = Text(value)
    versus = row.versus(run)
    if versus:
        sig = row.significant.get(run, False)
        t.append(f" {versus}", style="#ff8787" if sig else "dim")
        if not sig and not row.equal.get(run):
            t.append(" ~", style="dim")
    return t


def metrics_list(v: Verdict, runs: list[str]) -> Group:
    """The narrow form: per metric its note, then one line per run (best first)."""
    lines: list[Text] = [Text("per metric: mean per step; others vs best: % worse [95% noise band], ~ within noise",
                              style="dim")]
    color = {r: theme.run_color(i) for i, r in enumerate(runs)}
    width = max((len(r) for r in runs), default=8)
    for row in v.rows:
        lines.append(Text.assemble((f"{row.label} ({row.unit})", "bold"), ("  " + row.note, "dim")))
        order = sorted(runs, key=lambda r: (r != row.best, runs.index(r)))
        for r in order:
            t = Text(f"  {r:<{width}}  ", style=color[r])
            t.append_text(_metric_cell(row, r))
            lines.append(t)
    return Group(*lines)


def metrics_table(v: Verdict, runs: list[str]) -> Table:
    t = Table(title="per metric: mean per step; others vs best: % worse, [95% noise band]; ~ within noise",
              title_justify="left", title_style="dim", expand=False, show_edge=False, pad_edge=False)
    t.add_column("metric", style="bold", no_wrap=True)
    for i, r in enumerate(runs):
        t.add_column(Text(r, style=f"bold {theme.run_color(i)}"), no_wrap=False)
    t.add_column("note", style="dim")
    for row in v.rows:
        t.add_row(Text(f"{row.label} ({row.unit})"), *[_metric_cell(row, r) for r in runs], row.note)
    return t


def breakdown_table(v: Verdict) -> Table | Text:
    if not v.breakdown or not v.ranked or v.runner_up is None:
        return Text("per-phase breakdown: needs two runs with complete steps", style="dim")
    winner = v.ranked[0]
    t = Table(title=f"where {v.runner_up} loses time against {winner} (seconds per step)", title_justify="left",
              title_style="bold", show_edge=False, pad_edge=False, show_header=False)
    t.add_column("phase", no_wrap=True)
    t.add_column("diff", justify="right", no_wrap=True)
    t.add_column("bar", no_wrap=True)
    biggest = max(abs(d) for _, d in v.breakdown) or 1.0
    for phase, diff in v.breakdown:
        n = int(round(20 * abs(diff) / biggest))
        color = theme.phase_color(phase)
        t.add_row(Text(PHASE_LABELS.get(phase, phase), style=color), Text(f"{diff:+.2f}s"),
                  Text("█" * n, style=color if diff > 0 else "dim"))
    return t


def phase_table(summaries: list[RunSummary]) -> Table:
    t = Table(title="phase means (seconds per step)", title_justify="left", title_style="bold", show_edge=False,
              pad_edge=False)
    t.add_column("phase", no_wrap=True)
    for i, s in enumerate(summaries):
        t.add_column(Text(s.label, style=f"bold {theme.run_color(i)}"), justify="right")
    for phase in PHASE_ORDER:
        if not any(phase in s.phase_means for s in summaries):
            continue
        t.add_row(Text(PHASE_LABELS.get(phase, phase), style=theme.phase_color(phase)),
                  *[fmt.secs(s.phase_means.get(phase)) for s in summaries])
    t.add_row("startup", *[fmt.secs(s.startup_s) for s in summaries])
    if any(s.trainer_start_s is not None for s in summaries):
        t.add_row("trainer launch", *[fmt.secs(s.trainer_start_s) for s in summaries])
    if any(s.mismatch for s in summaries):
        t.add_row("logprob |d|", *[f"{s.mismatch['mean_abs']:.2g}" if s.mismatch else "n/a" for s in summaries])
        t.add_row("KL k3", *[f"{s.mismatch['k3']:.2g}" if s.mismatch else "n/a" for s in summaries])
    return t


def memory_lines(summaries: list[RunSummary]) -> Text:
    t = Text()
    for i, s in enumerate(summaries):
        m = s.memory
        t.append(f"{s.label}: ", style=f"bold {theme.run_color(i)}")
        if not m.measured:
            t.append(f"memory {m.reason}\n", style="dim")
        else:
            # held/freed: the engine's own processes; the device column as the text report's second line
            t.append(f"peak {fmt.mib(m.peak_mib)}, freed at offload {fmt.mib(m.mean_freed_mib)}, "
                     f"still held {fmt.mib(m.mean_held_mib)} (device above idle floor "
                     f"{fmt.mib(m.device_mean_held_mib)})\n")
    return t


class VerdictView:
    """Lays the verdict out for the width it gets: a table of runs side by side, or a list when narrow."""

    def __init__(self, snap: Snapshot | None, files: list[tuple[str, str]]) -> None:
        self.snap, self.files = snap, files

    def __rich_console__(self, console, options):
        yield verdict_renderable(self.snap, self.files, options.max_width)


def verdict_renderable(snap: Snapshot | None, files: list[tuple[str, str]], width: int = 200) -> Group:
    parts: list = []
    v = snap.verdict if snap is not None else None
    runs: list[RunView] = list(snap.runs) if snap is not None else []
    summaries = [r.summary for r in runs if r.summary is not None]
    if v is None:
        parts.append(Text("no verdict yet: no run has data", style="bold #d7af00"))
    else:
        style = "bold #5fd75f" if v.winner else "bold #d7af00"
        parts.append(Text(v.headline, style=style))
        if v.confidence:
            parts.append(Text(v.confidence, style="dim"))
        if v.basis:
            parts.append(Text(v.basis, style="dim"))
        for caveat in v.caveats:
            parts.append(Text("note: " + caveat, style="yellow"))
        for f in v.findings:
            parts.append(Text(finding_line(f), style="bold #ff8787" if f.severity == "warning" else "yellow"))
        for run, why in v.unranked.items():
            parts.append(Text.assemble(("not ranked: ", "#ff8787"), (run, "bold"), f" — {why}"))
    # errors right under the headline: the first thing to read when a run failed, before any table
    errors = [(r.key, e) for r in runs for e in r.error_events]
    if errors:
        parts.append(Text("errors", style="bold #ff5f5f"))
        for key, e in errors:
            parts.append(Text.assemble(f"  {key}: ", (f"[{e.category}] ", theme.ERROR_STYLE), e.message,
                                       (f"  → {e.advice}" if e.advice else "", "#d7af00")))
    parts.extend(_files(files))
    if v is not None:
        parts.append(Text(""))
        labels = [s.label for s in summaries]
        wide = width >= 34 + 30 * len(labels)
        parts.append(metrics_table(v, labels) if wide else metrics_list(v, labels))
        parts.append(Text(""))
        parts.append(breakdown_table(v))
    if summaries:
        parts.append(Text(""))
        parts.append(phase_table(summaries))
        parts.append(Text(""))
        parts.append(memory_lines(summaries))
    return Group(*parts)


def _files(files: list[tuple[str, str]]) -> list[Text]:
    return [Text.assemble((f"{what:<8} ", "dim"), (where, "underline" if "/" in where else "")) for what, where in files]


class VerdictScreen(Screen):
    DEFAULT_CSS = """
    VerdictScreen #verdict-body { padding: 0 1; }
    VerdictScreen #verdict-title { height: 1; background: $panel; text-style: bold; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape,d", "app.pop_screen", "Dashboard"),
        Binding("q", "app.request_quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple = ()

    def compose(self) -> ComposeResult:
        yield Static(" sgtui · verdict", id="verdict-title")
        with VerticalScroll(id="verdict-scroll"):
            yield Static(id="verdict-body")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_verdict()

    def on_screen_resume(self) -> None:
        self.refresh_verdict()

    def show(self, snap: Snapshot) -> None:
        self.refresh_verdict(snap)

    def refresh_verdict(self, snap: Snapshot | None = None) -> None:
        if not self.is_mounted:
            return
        snap = snap or host_of(self).snapshot
        files = host_of(self).files_info()
        key = (id(snap.verdict) if snap else None, tuple(id(r.summary) for r in snap.runs) if snap else (), tuple(files))
        if key == self._shown:
            return
        self._shown = key
        self.query_one("#verdict-body", Static).update(VerdictView(snap, files))
