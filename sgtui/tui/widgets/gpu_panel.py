"""Per GPU: memory used/total, each run's share, utilisation, and a memory sparkline coloured by phase.

The sparkline covers the whole session (buckets of `bucket_s`), so the dip at
every offload and the memory not given back stay visible; the marker line
under it puts a phase letter where a phase started, and a legend line under
the panel says which letter is which phase (only the letters shown). With
several sessions each gets a title with its `#n` tag, the tag the run labels
carry (`sgtui.labels`). Without a driver the panel says so in one line and the
rest of the dashboard works as usual.
"""

from __future__ import annotations

from rich.text import Text

from sgtui.labels import session_tag
from sgtui.tui import theme
from sgtui.viewmodel.views import DeviceView, GpuView, RunView
from sgtui.tui.widgets.lines import LinesWidget

WIDE_PREFIX = 6  # " mem ▕"
COMPACT_PREFIX = 22  # "0 41.20/79.65G 100% ▕"


def _gib(mib: float | None) -> str:
    return "—" if mib is None else f"{mib / 1024:.1f}"


def marker_legend(letters: set[str], width: int) -> Text | None:
    """What the marker row's letters mean (`S startup  r rollout ...`), for the letters drawn, in a
    step's order; None when none is."""
    phases = [p for p, letter in theme.PHASE_LETTERS.items() if letter in letters]
    if not phases:
        return None
    t = Text("      ▲ phase starts:", style="dim")
    for phase in phases:
        t.append("  ")
        t.append(theme.PHASE_LETTERS[phase], style=f"bold {theme.phase_color(phase)}")
        t.append(f" {theme.PHASE_NAMES.get(phase, (phase,))[0]}", style="dim")
    t.truncate(width, overflow="ellipsis")
    return t


def _has_markers(gpus: tuple[GpuView, ...]) -> bool:
    return any(d.markers for g in gpus if not g.error for d in g.devices)


class GpuPanel(LinesWidget):
    """Renders `GpuView`s; `compact` (one line per device) for short terminals."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; width: 1fr; padding: 0 1; }
    """

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.gpus: tuple[GpuView, ...] = ()
        self.run_colors: dict[str, str] = {}
        self.compact = False
        self._lines = 1

    def spark_width(self, width: int | None = None) -> int:
        w = (width if width is not None else self.size.width) - 2  # padding
        return max(8, w - (COMPACT_PREFIX if self.compact else WIDE_PREFIX) - 1)

    def set_compact(self, compact: bool) -> None:
        if compact != self.compact:
            self.compact = compact
            self._relayout_if_needed()
            self.update_lines()

    def show(self, gpus: tuple[GpuView, ...], runs: tuple[RunView, ...]) -> None:
        same = len(gpus) == len(self.gpus) and all(a is b for a, b in zip(gpus, self.gpus))
        if same and all(self.run_colors.get(r.key) for r in runs):
            return
        self.gpus = gpus
        self.run_colors = {r.key: theme.run_color(r.index) for r in runs}
        self._relayout_if_needed()
        self.update_lines()

    def _count_lines(self) -> int:
        n = 0
        for g in self.gpus:
            if g.title:
                n += 1
            if g.error or not g.devices:
                n += 1
                continue
            n += len(g.devices) * (1 if self.compact else 3)
        if not self.compact and _has_markers(self.gpus):
            n += 1
        return max(1, n)

    def _relayout_if_needed(self) -> None:
        n = self._count_lines()
        if n != self._lines:
            self._lines = n
            self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return self._count_lines()

    # -- rendering -------------------------------------------------------------------------
    def build_lines(self, width: int) -> list[Text]:
        width = max(20, width - 2)
        lines: list[Text] = []
        drawn: set[str] = set()
        if not self.gpus:
            lines.append(Text("GPU: waiting for the first sample", style="dim"))
        for g in self.gpus:
            if g.title:
                lines.append(Text(f"session {session_tag(g.session + 1)} {g.title}", style="bold"))
            if g.error or not g.devices:
                msg = g.error or "no devices"
                lines.append(Text.assemble(("GPU: ", "bold"), (msg, "#d7af00"),
                                           (" — memory is not measured; everything else works", "dim")))
                continue
            for d in g.devices:
                if self.compact:
                    lines.append(self._compact_line(d, width))
                else:
                    wide = self._wide_lines(d, width)
                    drawn.update(c for c in wide[2].plain if c.isalpha())  # the marker row
                    lines.extend(wide)
        if not self.compact and _has_markers(self.gpus):  # the letters drawn (a later one may cover one)
            lines.append(marker_legend(drawn, width) or Text("      ▲ phase starts", style="dim"))
        return lines

    @staticmethod
    def _stretch(n: int, width: int) -> int:
        """Cells per bucket: a short session still spans the panel."""
        return max(1, width // n) if n else 1

    def _spark(self, d: DeviceView, width: int, util: bool = False) -> Text:
        values = d.util_spark if util else d.spark
        values = values[-width:]
        k = self._stretch(len(values), width)
        t = Text()
        for i, v in enumerate(values):
            phase = d.phases[len(d.phases) - len(values) + i] if d.phases else ""
            style = theme.phase_color(phase) if phase else "#5f5f5f"
            t.append(theme.spark_char(v) * k, style=style)
        if len(values) * k < width:
            t.append(" " * (width - len(values) * k))
        return t

    def _markers(self, d: DeviceView, width: int) -> Text:
        cells = [" "] * width
        styles = [""] * width
        offset = max(0, len(d.spark) - width)
        k = self._stretch(min(len(d.spark), width), width)
        for b, phase in d.markers:
            i = (b - offset) * k
            if 0 <= i < width:
                cells[i] = theme.PHASE_LETTERS.get(phase, "?")
                styles[i] = theme.phase_color(phase)
        t = Text()
        for c, s in zip(cells, styles):
            t.append(c, style=s)
        return t

    def _share_bar(self, d: DeviceView, width: int) -> Text:
        total = d.total_mib or 1.0
        t = Text("▕", style="dim")
        used_cells = 0
        for key, mib in d.shares:
            n = int(round(width * mib / total))
            if n <= 0:
                continue
            color = "#6c6c6c" if key == "other" else self.run_colors.get(key, "#808080")
            label = key[: n]
            t.append(label.ljust(n, "█")[:n], style=f"bold #000000 on {color}" if label else color)
            used_cells += n
        other = int(round(width * (d.used_mib or 0.0) / total)) - used_cells
        if other > 0:
            t.append("░" * other, style="#6c6c6c")
            used_cells += other
        if used_cells < width:
            t.append(" " * (width - used_cells))
        t.append("▏", style="dim")
        return t

    def _wide_lines(self, d: DeviceView, width: int) -> list[Text]:
        util = "—" if d.util is None else f"{d.util:.0f}%"
        head = Text.assemble(
            (f"GPU{d.index} ", "bold"),
            (f"{d.name[:24]:<24} ", "dim"),
            (f"{_gib(d.used_mib):>5}/{_gib(d.total_mib)} GiB ", ""),
            (f"util {util:>4} ", "bold" if (d.util or 0) > 50 else ""),
        )
        rest = width - head.cell_len - 2
        if rest >= 10:
            head.append_text(self._share_bar(d, rest))
        spark_w = max(8, width - WIDE_PREFIX - 1)
        line2 = Text(" mem ▕", style="dim")
        line2.append_text(self._spark(d, spark_w))
        line3 = Text("      ")
        line3.append_text(self._markers(d, spark_w))
        return [head, line2, line3]

    def _compact_line(self, d: DeviceView, width: int) -> Text:
        util = "—" if d.util is None else f"{d.util:.0f}%"
        head = Text.assemble((f"{d.index} ", "bold"), (f"{_gib(d.used_mib):>5}/{_gib(d.total_mib):<5}G ", ""),
                             (f"{util:>4} ", ""), ("▕", "dim"))
        head.append_text(self._spark(d, max(8, width - head.cell_len - 1)))
        return head
