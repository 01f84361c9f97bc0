"""A widget drawn as Rich `Text` lines, each turned into a `Strip` once and repainted only when it changed.

Why: a widget that returns one `Text` from `render()` is converted and re-rendered whole on every
`refresh()` (Text -> Content -> strips of every line), and the compositor repaints all of it. The
dashboard's table and timeline change a few cells per snapshot (a counter, the running phase's
bar), yet their full re-render was most of the event loop's CPU during a rollout
(benchmarks/ui_cpu.py). Here `set_lines` compares the new lines with the shown ones and refreshes
only the rows that differ; `render_line` (Textual's line API) hands out cached strips. A line is
rendered exactly as the widget would render it in one `Text` (same `Visual.to_strips` path and
style), so the screen does not change.
"""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.visual import Visual, visualize
from textual.widget import Widget


def line_key(text: Text) -> tuple:
    """What a line looks like: its characters, spans and base style (equal keys render alike)."""
    return text.plain, tuple(text.spans), str(text.style), text.end


class LinesWidget(Widget):
    """Subclasses implement `build_lines(width)` and call `update_lines()` when their data changed."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._lw_lines: list[Text] = []
        self._lw_keys: list[tuple] = []
        self._lw_width = -1  # width the lines were built for
        self._lw_strips: dict[tuple, Strip] = {}
        self._lw_style = None  # visual style and width the strips were rendered with
        self._lw_strip_width = -1

    def build_lines(self, width: int) -> list[Text]:
        raise NotImplementedError

    def lines_width(self) -> int:
        """The width lines are built for (the content width)."""
        return self.size.width

    def update_lines(self) -> bool:
        """Rebuild the lines; repaint the rows that changed (all rows and a layout when their number
        changed). Returns whether anything changed."""
        width = self.lines_width()
        if not self.is_mounted or width <= 0:
            self._lw_width = -1
            self.refresh()
            return True
        lines = self.build_lines(width)
        keys = [line_key(t) for t in lines]
        old = self._lw_keys
        same_width = width == self._lw_width
        self._lw_lines, self._lw_keys, self._lw_width = lines, keys, width
        if not same_width:
            self.refresh()
            return True
        if len(keys) != len(old):
            self.refresh(layout=True)
            return True
        changed = False
        y = 0
        n = len(keys)
        while y < n:  # one refresh region per run of changed rows
            if keys[y] == old[y]:
                y += 1
                continue
            start = y
            while y < n and keys[y] != old[y]:
                y += 1
            self.refresh(Region(0, start, width, y - start))
            changed = True
        return changed

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width != self._lw_width:
            self._lw_lines = self.build_lines(width)
            self._lw_keys = [line_key(t) for t in self._lw_lines]
            self._lw_width = width
        style = self.visual_style
        if style != self._lw_style or width != self._lw_strip_width:
            self._lw_strips = {}
            self._lw_style, self._lw_strip_width = style, width
        if y >= len(self._lw_lines):
            return Strip.blank(width, style.rich_style)
        key = self._lw_keys[y]
        strip = self._lw_strips.get(key)
        if strip is None:
            if len(self._lw_strips) > 4 * max(64, len(self._lw_lines)):
                live = set(self._lw_keys)
                self._lw_strips = {k: v for k, v in self._lw_strips.items() if k in live}
            strips = Visual.to_strips(self, visualize(self, self._lw_lines[y], markup=False), width, 1, style)
            strip = strips[0] if strips else Strip.blank(width, style.rich_style)
            self._lw_strips[key] = strip
        return strip

    def render(self) -> Text:
        """All lines as one Text: painting goes through `render_line`, but Textual's text selection
        (`Widget.get_selection`, mouse copy of table numbers) reads the whole widget from here."""
        out = Text(no_wrap=True, overflow="crop")
        for i, line in enumerate(self.build_lines(max(1, self.size.width))):
            if i:
                out.append("\n")
            out.append_text(line)
        return out
