"""The per-run log panes on their own, in a bare App: the moments around mounting that the dashboard hits
by timing (a big terminal opens each pane as its run appears, before the pane has composed its Log)."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Log

from sgtui.viewmodel.views import LogLine, RunView
from sgtui.tui.widgets.log_pane import LogPanes
from tui_helpers import wait_for


class PanesApp(App):
    def compose(self) -> ComposeResult:
        yield LogPanes()


@pytest.fixture
def unmounted_writes(monkeypatch) -> list[list[str]]:
    """Every write into a Log that is not mounted (the cause; whether Textual's thread then fails is timing)."""
    seen: list[list[str]] = []
    write_lines = Log.write_lines

    def checked_write_lines(log: Log, lines, *a, **kw):
        if not log.is_mounted:
            seen.append(list(lines))
        return write_lines(log, lines, *a, **kw)

    monkeypatch.setattr(Log, "write_lines", checked_write_lines)
    return seen


def run_with_lines(key: str, n: int) -> RunView:
    lines = tuple(LogLine("engine", f"line {i}") for i in range(n))
    return RunView(key=key, label=key, index=0, session=0, log_count=n, log_tail=lines)


async def test_pane_opened_before_its_log_is_mounted_shows_every_line(unmounted_writes):
    """Opening a pane that is not composed yet used to write into a Log with no parent: Textual's width
    worker (a thread) then found no app and the worker error ended the whole app (CI: the 200x50 verdict
    snapshot timed out on it)."""
    app = PanesApp()
    async with app.run_test(size=(200, 50)) as pilot:
        logs = app.query_one(LogPanes)
        logs.set_expand_new(True)
        logs.show((run_with_lines("a", 3),))  # mounts pane "a" open, in this same handler
        logs.show((run_with_lines("a", 5),))  # more lines before it has composed
        logs.flush()  # the flush timer firing in between (a loaded box)
        pane = logs.panes["a"]
        await wait_for(pilot, lambda: pane.log_widget.line_count == 5, timeout=10, what="5 lines written")
        assert [line.split()[-1] for line in pane.log_widget.lines] == ["0", "1", "2", "3", "4"]
        logs.show((run_with_lines("a", 6),))
        await wait_for(pilot, lambda: pane.log_widget.line_count == 6, timeout=10, what="a 6th line")
        assert app.return_code is None  # still running: no worker failed
    assert unmounted_writes == []


async def test_pane_toggled_open_while_composing_shows_its_buffer(unmounted_writes):
    """The other way in: a collapsed pane opened (key `l`) in the moment after it appeared."""
    app = PanesApp()
    async with app.run_test(size=(120, 40)) as pilot:
        logs = app.query_one(LogPanes)
        logs.show((run_with_lines("b", 4),))
        pane = logs.toggle("b")
        assert pane is not None and not pane.collapsed
        await wait_for(pilot, lambda: pane.log_widget.line_count == 4, timeout=10, what="4 lines written")
        assert app.return_code is None
    assert unmounted_writes == []
