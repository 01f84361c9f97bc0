"""Following sessions another sgtui writes: new events as they land, and whether their writer still lives.

    f = SessionFollower([path])
    for batch in f.read(): ...fold batch.events, show batch.problems...
    if f.check_owners([state]): f.owners[0].state / .dead / .over / .announced

Why one place: `sgtui attach --no-ui` and the UI following a detached run must agree on when a session is
dead (its sgtui is gone with runs unfinished: a kill -9 or the OOM killer never writes run_end, and without
this it would look running forever) and on what cannot be told (a session written on another host, or by a
tool without a pid, is "unknown", never shown dead). The caller folds the events into its own state (the
follower keeps none: the UI and the headless printer fold differently) and hands the states back for the
owner checks. No Textual, no rich: the caller words and shows everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sgtui.events import Event
from sgtui.session import SessionTail

if TYPE_CHECKING:
    from sgtui.state import SessionState

#: How often the tails are read when nothing came (a backlog is read on at once).
FOLLOW_POLL_S = 0.2
#: How often the owner of each session is looked up in /proc.
OWNER_CHECK_S = 1.0


@dataclass
class Batch:
    """What one session's file gained since the last read."""

    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # lines that could not be decoded (file:line: why)


@dataclass
class Owner:
    """What is known of the sgtui writing one session, as of the last owner check."""

    state: str = "unknown"  # alive | gone | unknown (no header yet, no pid in it, written on another host)
    pid: int = 0  # the header's pid (0: none yet)
    host: str = ""  # the header's host ("" unknown)
    header: bool = False  # the session has its header (before it, nothing can be told)
    done: bool = False  # every run of the session ended
    announced: bool = False  # the caller told the user `state` (set it; the follower never resets it)

    @property
    def dead(self) -> bool:
        """The writer is gone and runs never ended: they never will (leftover engines: `sgtui cleanup`)."""
        return self.state == "gone" and not self.done

    @property
    def over(self) -> bool:
        """Nothing more will come: the writer is gone, or (where that cannot be told) every run ended."""
        return self.state == "gone" or (self.state == "unknown" and self.done)

    @property
    def why_dead(self) -> str:
        return f"sgtui pid {self.pid} is gone; runs without run_end will never finish" if self.dead else ""


class SessionFollower:
    """Tails of `paths` and their owners. Not thread-safe: one thread reads and checks.

    `check_done=False` skips the /proc look for sessions whose runs all ended (the UI: such a session cannot
    turn dead); the headless follower keeps looking, as it ends when the writer is gone."""

    def __init__(self, paths: Sequence[str | Path], *, poll_s: float = FOLLOW_POLL_S,
                 owner_every: float = OWNER_CHECK_S, check_done: bool = True,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.paths = [Path(p) for p in paths]
        self.tails = [SessionTail(p) for p in self.paths]
        self.owners = [Owner() for _ in self.paths]
        self.poll_s = poll_s
        self.owner_every = owner_every
        self.check_done = check_done
        self.mono = mono
        self.next_poll = 0.0  # mono time of the next read that `due` allows
        self.next_owner_check = 0.0

    def due(self) -> bool:
        """Time for `read` (a caller on its own clock, e.g. a loop that sleeps, need not ask)."""
        return self.mono() >= self.next_poll

    def read(self) -> list[Batch]:
        """Every session's new events and problems, in `paths` order. After a read that brought events, the
        next one is due at once (a backlog), else in `poll_s`."""
        out = []
        for tail in self.tails:
            events = tail.poll()
            out.append(Batch(events, list(tail.problems)))
            tail.problems.clear()
        now = self.mono()
        self.next_poll = now if any(b.events for b in out) else now + self.poll_s
        return out

    def check_owners(self, states: Sequence[SessionState], force: bool = False) -> bool:
        """Update `owners` from the callers' folded `states` (one per path), at most every `owner_every`
        unless forced; True when it looked. A lookup that fails (OSError) keeps the last answer."""
        from sgtui.sessions_index import owner_state, session_runs

        now = self.mono()
        if not force and now < self.next_owner_check:
            return False
        self.next_owner_check = now + self.owner_every
        for path, st, o in zip(self.paths, states, self.owners):
            runs = session_runs(st)
            o.done = bool(runs) and all(r.end is not None for r in runs)
            h = st.header
            o.header = h is not None
            if h is not None:
                o.pid, o.host = h.pid, h.host
            if o.done and not self.check_done:
                continue
            try:
                o.state = owner_state(path, st)
            except OSError:
                continue
        return True
