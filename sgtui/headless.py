"""Headless runs (`--no-ui`, or no terminal): progress on stderr with rich, the report on stdout."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from sgtui.config import RunConfig
from sgtui.events import Event
from sgtui.options import ReportOptions
from sgtui.progress import HEARTBEAT_S, Plan, ProgressRow, Ticker, make_printer, progress_rows
from sgtui.state import SessionState

if TYPE_CHECKING:
    from sgtui.follow import SessionFollower


class Progress:
    """The headless subscriber: folds events into `state` and shows them (`sgtui.progress`): on a terminal a live
    table of every run (phase, step N/M, requests done/expected, tok/s) under the phase-end, error and run-end
    lines; on a pipe or file, ISO-UTC-timestamped lines at each phase start and end, errors, run ends, and a
    heartbeat per running run at least every `heartbeat_s` (so a log shows a 200 s engine start as it goes).

    Use it as a context manager around the run (starts the live display or the heartbeat thread, and stops them
    however the block ends). Without one (the detached orchestrator's log), heartbeats come with the events."""

    def __init__(self, console: Console, session_path: Path | None = None, *, live: bool | None = None,
                 clock: Callable[[], float] = time.time, heartbeat_s: float | None = None,
                 plans: Mapping[str, Plan] | None = None, ticker: bool = True) -> None:
        self.console = console
        self.state = SessionState("live")
        self.lock = threading.Lock()  # the state and the printer's bookkeeping
        self.print_lock = threading.Lock()  # whole events' lines together; never taken with `lock` held
        self.session_path = session_path  # announced with the header: only once the file really exists
        self.clock = clock
        self.plans = dict(plans or {})
        hb = heartbeat_s if heartbeat_s is not None else heartbeat_from_env()
        # the ticker checks every `every` s: a heartbeat due after hb - every keeps every gap within hb
        every = min(0.5, hb / 4) if ticker else 0.0
        self.printer = make_printer(console, live=live, clock=clock, heartbeat_s=hb - every,
                                    session_path=str(session_path) if session_path is not None else None)
        self._ticker = Ticker(self.tick, every) if ticker and not self.printer.live else None

    def __call__(self, e: Event) -> None:
        with self.lock:
            self.state.apply(e)
            lines = self.printer.on_event(e, self.state)
            lines += self.printer.on_tick(self.state, self.plans)
        if self._ticker is not None:
            self._ticker.start()  # no-op once running
        self._write(lines)

    def tick(self) -> None:
        """Heartbeat lines due now (the line printer); nothing on a terminal (the live table refreshes itself)."""
        with self.lock:
            lines = self.printer.on_tick(self.state, self.plans)
        self._write(lines)

    def rows(self) -> list[ProgressRow]:
        with self.lock:
            return progress_rows(self.state, self.clock(), self.plans)

    def _write(self, lines: list[str]) -> None:
        if lines:
            with self.print_lock:
                self.printer.write(lines)

    def __enter__(self) -> Progress:
        self.printer.start(self.rows)
        if self._ticker is not None:
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self.printer.stop()


def heartbeat_from_env() -> float:
    """$SGTUI_HEARTBEAT_S (seconds, > 0) or 10."""
    try:
        v = float(os.environ.get("SGTUI_HEARTBEAT_S", ""))
    except ValueError:
        return HEARTBEAT_S
    return v if v > 0 else HEARTBEAT_S


def run_headless(runs: list[RunConfig], session_path: Path, exports: list[str], concurrent: bool = False,
                 opts: ReportOptions = ReportOptions(), interleave: bool = False, **orchestrator_kwargs) -> int:
    """`--no-ui`: the runs with progress on stderr, the text report on stdout, the reports next to the session;
    returns the exit code (`sgtui.lifecycle.Outcome.exit_code`). Keyword arguments go to the orchestrator."""
    from sgtui.export import render
    from sgtui.lifecycle import run_session

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    progress = Progress(console, session_path, plans={r.label: Plan(r.num_steps, r.num_rollouts) for r in runs})
    with progress:  # the live display / heartbeat thread stop however the run ends (Ctrl-C: the
        out = run_session(runs, session_path, exports, opts=opts, subscribers=[progress],  # orchestrator's
                          concurrent=concurrent, interleave=interleave, **orchestrator_kwargs)  # handler cancels)
    if not out.started:
        console.print(f"[red]sgtui: error: {escape(out.fatal)}[/]")
        return out.exit_code
    if out.fatal:
        first, _, rest = out.fatal.partition("\n")
        console.print(f"[red]sgtui: error: {escape(first)}; runs were stopped[/]")
        if rest:
            console.print(escape(rest))
    state = progress.state
    state.source = str(session_path)
    print(render("txt", [state], opts), end="")
    for p in out.exports:
        console.print(f"wrote {p}")
    if out.export_error:
        console.print(f"[red]sgtui: error: {escape(out.export_error)}[/]")
    console.print(f"session saved: {session_path}")
    return out.exit_code


#: Exit code of `sgtui attach --no-ui` when the session's sgtui died with runs unfinished.
EXIT_DEAD = 3


def follow_headless(session_path: Path, poll: float = 0.2, owner_every: float = 1.0,
                    console: Console | None = None) -> int:
    """`sgtui attach --no-ui`: the progress lines of a session another sgtui writes, as they are written.

    Ends when the owner process is gone: with the report if every run that started ended (0 all ok,
    1 otherwise), or with EXIT_DEAD and a one-line diagnosis if runs never ended (the orchestrator was
    killed): a dead session never looks like it is still running. Ctrl-C leaves the runs going."""
    from sgtui.export import render
    from sgtui.follow import SessionFollower
    from sgtui.sessions_index import session_runs

    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    progress = Progress(console)
    progress.state.source = str(session_path)
    follower = SessionFollower([session_path], poll_s=poll, owner_every=owner_every)
    console.print(f"attached to {session_path} (Ctrl-C leaves the runs going)")
    try:
        with progress:
            _follow(follower, progress, console, poll)
    except KeyboardInterrupt:
        console.print(f"detached from {session_path}; runs go on (stop them: sgtui stop {session_path})")
        return 0
    st = progress.state
    runs = session_runs(st)
    unfinished = [r.label for r in runs if r.end is None]
    if unfinished or not runs:
        pid = st.header.pid if st.header else 0
        console.print(f"[red]sgtui: error: the sgtui writing this session (pid {pid}) is gone and "
                      f"{', '.join(unfinished) or 'no run'} never ended: dead session[/] "
                      "(leftover engines: `sgtui cleanup`)")
        return EXIT_DEAD
    print(render("txt", [st]), end="")
    return 0 if all(r.status == "ok" for r in runs) else 1


def _follow(follower: SessionFollower, progress: Progress, console: Console, poll: float) -> None:
    """follow_headless's loop: until the session's owner is gone (or, where that cannot be told, its runs ended)."""

    def read() -> None:
        for batch in follower.read():
            for e in batch.events:
                progress(e)
            for p in batch.problems:
                console.print(f"[yellow]sgtui: warning: {escape(p)}[/]")

    owner = follower.owners[0]
    while True:
        read()
        if follower.check_owners([progress.state]):
            if owner.state == "alive" and not owner.announced:
                console.print(f"sgtui pid {owner.pid} is writing it")
                owner.announced = True
            elif owner.state == "unknown" and owner.header and not owner.announced:
                console.print(f"[yellow]written on {escape(owner.host or 'an unknown host')}: whether its sgtui is "
                              "alive cannot be checked from here; following until its runs end[/]")
                owner.announced = True
            if owner.over:
                read()  # whatever it wrote before exiting
                break
        time.sleep(poll)
