"""The session as callers hold it: the fold with its runs' summaries one call away.

`SessionState` is `SessionFold` (sgtui.state.fold: `apply` is the only fold) plus `summary(label)`. It is a
subclass in a module of its own because summaries are computed from the fold (`sgtui.state.summaries`
imports `fold`): the fold imports nothing above it, so the package has no import cycle.
"""

from __future__ import annotations

from typing import Iterable

from sgtui.events import Event
from sgtui.state.fold import SessionFold
from sgtui.state.summaries import RunSummary, run_summary


class SessionState(SessionFold):
    """Everything known about one session, folded from its events in order (`apply`), and its runs' summaries."""

    def summary(self, label: str) -> RunSummary:
        return run_summary(self.runs[label], self.gpu)


def load_state(events: Iterable[Event], source: str = "") -> SessionState:
    return SessionState(source).apply_all(events)
