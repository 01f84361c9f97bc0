"""A collapsible log per run: engine/trainer/runner lines, errors highlighted with their category.

Lines come from the snapshot's `log_tail` (the last LOG_TAIL lines of the run)
and its running `log_count`: the pane appends only what it has not shown yet,
so a dropped snapshot never loses or repeats a line (a gap larger than the
tail is said in one line). A collapsed pane only buffers; it writes to its
log widget when opened, so twenty noisy runs cost nothing while closed.

Textual's `Log` (plain strings, renders only the visible lines, styles from
a highlighter) rather than `RichLog` (renders every line written): under a
chatty engine the difference was most of the event loop's time.
"""

from __future__ import annotations

import re
from collections import deque

from rich.highlighter import Highlighter
from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Collapsible, Log

from sgtui.errors import categorize
from sgtui.events import ERROR_CATEGORIES
from sgtui.tui import theme
from sgtui.viewmodel.views import LogLine, RunView

BUFFER = 1000
FLUSH_MAX = 200  # lines written to an open pane per flush
SOURCE_W = 8
_HINTS = ("rror", "ERROR", "Traceback", "memory", "Exception", "Killed", "in use", "No such", "FAILED", "refused")
_CATEGORY = re.compile(r"\[(?:" + "|".join(ERROR_CATEGORIES) + r")\]")
_ADVICE = re.compile(r"  → .*$")
_ERRORISH = re.compile(r"error|traceback|exception", re.IGNORECASE)


class LogHighlighter(Highlighter):
    """Source column dim; ERROR lines and [CATEGORY] tags red; advice yellow; error-looking text pink."""

    def highlight(self, text: Text) -> None:
        plain = text.plain
        text.stylize("dim", 0, min(SOURCE_W, len(plain)))
        if plain.startswith("ERROR"):
            text.stylize("bold #ff8787", SOURCE_W)
            text.stylize(theme.ERROR_STYLE, 0, SOURCE_W)
        elif _ERRORISH.search(plain, SOURCE_W):
            text.stylize("#ff8787", SOURCE_W)
        for m in _CATEGORY.finditer(plain):
            text.stylize(theme.ERROR_STYLE, m.start(), m.end())
        m = _ADVICE.search(plain)
        if m:
            text.stylize("#d7af00", m.start(), m.end())


def format_line(line: LogLine) -> str:
    """One log line as shown; lines matching a known failure get its category in front."""
    text = line.line.replace("\t", "    ")
    cat = ""
    if any(h in text for h in _HINTS):
        cat, _ = categorize(text, default="")
    return f"{line.source[:SOURCE_W - 1]:<{SOURCE_W}}" + (f"[{cat}] " if cat else "") + text


def error_line(category: str, message: str, advice: str = "", step: int = 0) -> str:
    where = f"step {step}: " if step else ""
    return f"{'ERROR':<{SOURCE_W}}[{category}] {where}{message}" + (f"  → {advice}" if advice else "")


class RunLog(Collapsible):
    """One run's log; `feed` takes a RunView and appends what is new."""

    DEFAULT_CSS = """
    RunLog { padding-bottom: 0; }
    RunLog Log { height: 12; background: $surface; }
    RunLog > Contents { padding: 0 0 0 1; }
    """

    def __init__(self, key: str, index: int, **kw) -> None:
        self.run_key = key
        self.run_index = index
        self.lines_buffer: deque[str] = deque(maxlen=BUFFER)
        self.seen_lines = 0
        self.seen_errors = 0
        self._pending: list[str] = []
        self.log_widget = Log(max_lines=BUFFER, highlight=True, auto_scroll=True)
        self.log_widget.highlighter = LogHighlighter()
        super().__init__(self.log_widget, title=self._make_title(0), collapsed=True, **kw)

    def _make_title(self, errors: int) -> str:
        # no line count here: a title that changes every tick would relayout the screen every tick
        err = f" · {errors} error{'s' if errors != 1 else ''}" if errors else ""
        return f"log · {self.run_key}{err}"

    def reset(self) -> None:
        """Start over (the replay sought backwards: the lines shown are from after the playhead)."""
        self.lines_buffer.clear()
        self.seen_lines = 0
        self.seen_errors = 0
        self._pending = []
        if self.log_widget.is_mounted:
            self.log_widget.clear()
        self.title = self._make_title(0)
        self.remove_class("-has-errors")

    def feed(self, run: RunView) -> None:
        new: list[str] = []
        if run.log_count > self.seen_lines:
            fresh = run.log_count - self.seen_lines
            tail = run.log_tail
            if fresh > len(tail):
                new.append(f"{'…':<{SOURCE_W}}{fresh - len(tail)} lines not shown (all are in the session file)")
                fresh = len(tail)
            new.extend(format_line(x) for x in tail[len(tail) - fresh:])
            self.seen_lines = run.log_count
        errs = run.error_events
        if len(errs) > self.seen_errors:
            for e in errs[self.seen_errors:]:
                new.append(error_line(e.category, e.message, e.advice, e.step))
            self.seen_errors = len(errs)
            self.title = self._make_title(self.seen_errors)
            self.add_class("-has-errors")
        if not new:
            return
        self.lines_buffer.extend(new)
        if not self.collapsed:
            self._pending.extend(new)
            if len(self._pending) > BUFFER:
                del self._pending[:-BUFFER]

    def flush(self) -> None:
        """Write what arrived since the last flush (LogPanes calls this twice a second: every
        write that grows the log relayouts the screen, so lines are written in batches).

        Nothing is written before the Log is mounted (a pane opened as it appears composes it a moment
        later): Log.write_lines starts a thread worker that looks the app up through the widget's
        parents, and finding none, fails and takes the app down. The lines wait in `_pending`."""
        if self.collapsed:
            self._pending = []
        elif self._pending and self.log_widget.is_mounted:
            lines = self._pending
            if len(lines) > FLUSH_MAX:  # more than anyone reads in half a second: keep the newest
                lines = [f"{'…':<{SOURCE_W}}{len(lines) - FLUSH_MAX} lines skipped here (all are in the session file)"] \
                    + lines[-FLUSH_MAX:]
            self.log_widget.write_lines(lines)
            self._pending = []

    def _watch_collapsed(self, collapsed: bool) -> None:
        super()._watch_collapsed(collapsed)
        if not collapsed:
            self._pending = []
            self.log_widget.clear()
            if self.log_widget.is_mounted:
                self.log_widget.write_lines(list(self.lines_buffer))
            else:  # on_mount writes them
                self._pending = list(self.lines_buffer)

    def on_mount(self) -> None:
        """Lines that came while the pane was composing (the whole buffer when it was opened before);
        if its Log is still not mounted here, the next flush writes them."""
        if self._pending and not self.collapsed and self.log_widget.is_mounted:
            self.log_widget.write_lines(self._pending)
            self._pending = []

    def text(self) -> str:
        """Everything buffered, as plain text (tests)."""
        return "\n".join(self.lines_buffer)


class LogPanes(Vertical):
    """One `RunLog` per run, created as runs appear."""

    DEFAULT_CSS = """
    LogPanes { height: auto; }
    LogPanes.-wide { layout: grid; grid-size: 3; grid-rows: auto; grid-gutter: 0 1; }
    LogPanes.-wide.-two { grid-size: 2; }
    LogPanes.-wide.-one { grid-size: 1; }
    LogPanes RunLog.-has-errors CollapsibleTitle { color: #ff5f5f; }
    """

    #: Each flush that grows a Log relayouts the screen (~13% of the event loop at 50 lines/s when this was
    #: 0.25 s, benchmarks/ui_cpu.py's busy profile); twice a second is as often as anyone reads a log.
    FLUSH_S = 0.5

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.panes: dict[str, RunLog] = {}
        self.expand_new = False  # big screens open logs as runs appear
        self.epoch = 0  # the replay's fold generation the panes were fed from

    def on_mount(self) -> None:
        self.set_interval(self.FLUSH_S, self.flush)

    def flush(self) -> None:
        for pane in self.panes.values():
            pane.flush()

    def show(self, runs: tuple[RunView, ...], epoch: int = 0) -> None:
        """epoch: `ReplayStatus.epoch`; a new one (a backward seek) empties every pane first, so they
        show only lines up to the playhead."""
        if epoch != self.epoch:
            self.epoch = epoch
            for pane in self.panes.values():
                pane.reset()
        for r in runs:
            pane = self.panes.get(r.key)
            if pane is None:
                pane = self.panes[r.key] = RunLog(r.key, r.index)
                if self.expand_new:
                    pane.collapsed = False
                self.mount(pane)
            pane.feed(r)

    def set_expand_new(self, expand: bool) -> None:
        if expand and not self.expand_new:
            for pane in self.panes.values():
                pane.collapsed = False
        self.expand_new = expand

    def toggle(self, key: str) -> RunLog | None:
        pane = self.panes.get(key)
        if pane is not None:
            pane.collapsed = not pane.collapsed
        return pane
