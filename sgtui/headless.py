"""Headless runs (`--no-ui`, or no terminal): progress on stderr with rich, the report on stdout."""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Console

from sgtui.config import RunConfig
from sgtui.events import Error, Event, Phase, RunEnd, RunStart, SessionHeader
from sgtui.options import ReportOptions
from sgtui.portlock import PortBusy
from sgtui.state import SessionState, step_summary


class Progress:
    """One stderr line per phase end, step summary, error and run end; the state is folded as events come."""

    def __init__(self, console: Console, session_path: Path | None = None) -> None:
        self.console = console
        self.state = SessionState("live")
        self.lock = threading.Lock()
        self.session_path = session_path  # announced with the header: only once the file really exists

    def __call__(self, e: Event) -> None:
        with self.lock:
            self.state.apply(e)
            c = self.console
            if isinstance(e, SessionHeader) and self.session_path is not None:
                c.print(f"session: {self.session_path}")
            elif isinstance(e, RunStart):
                c.print(f"[bold]{e.run}[/]: {e.backend} {e.engine_version} strategy={e.strategy} on {e.device}")
            elif isinstance(e, Phase) and e.edge == "end":
                run = self.state.runs[e.run]
                span = run.steps[e.step].phases.get(e.name)
                dur = f"{span.duration:.2f}s" if span and span.duration is not None else "?"
                mark = "" if e.ok else " [red]FAILED[/]"
                where = f"step {e.step}" if e.step else "turn" if e.name in ("park", "unpark") else "setup"
                c.print(f"  {e.run} {where} {e.name:<11} {dur:>9}{mark} [dim]{e.detail}[/]")
                if e.name == "weight_sync" and e.step:
                    s = step_summary(run.steps[e.step])
                    m = s.metrics
                    c.print(f"  {e.run} step {e.step} done: {m.output_throughput:.1f} tok/s, "
                            f"TTFT {m.mean_ttft_ms:.0f} ms, {m.completed} ok / {m.errors} errors, "
                            f"step {s.total_s or 0:.2f}s")
            elif isinstance(e, Error):
                c.print(f"  [red]{e.run} error [{e.category}][/] {e.message}")
                if e.advice:
                    c.print(f"    -> {e.advice}")
            elif isinstance(e, RunEnd):
                style = {"ok": "green", "failed": "red"}.get(e.status, "yellow")
                c.print(f"[{style}]{e.run}: {e.status}[/] {e.detail}")


def run_headless(runs: list[RunConfig], session_path: Path, exports: list[str], concurrent: bool = False,
                 opts: ReportOptions = ReportOptions(), interleave: bool = False) -> int:
    from sgtui.export import render, write_exports
    from sgtui.orchestrator import Orchestrator

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    progress = Progress(console, session_path)
    orch = Orchestrator(runs, session_path, subscribers=[progress], concurrent=concurrent, interleave=interleave)
    try:
        statuses = orch.run_sync()
    except PortBusy as e:
        console.print(f"[red]sgtui: error: {e}[/]")
        return 2
    except OSError as e:
        console.print(f"[red]sgtui: error: cannot write session {session_path}: {e.strerror or e}[/]")
        return 2
    if orch.fatal:
        console.print(f"[red]sgtui: error: {orch.fatal}; runs were stopped[/]")
    state = progress.state
    state.source = str(session_path)
    print(render("txt", [state], opts), end="")
    if exports:
        for p in write_exports([state], session_path.with_suffix(""), exports, opts):
            console.print(f"wrote {p}")
    console.print(f"session saved: {session_path}")
    return 0 if statuses and all(s == "ok" for s in statuses.values()) and not orch.fatal else 1


#: Exit code of `sgtui attach --no-ui` when the session's sgtui died with runs unfinished.
EXIT_DEAD = 3


def follow_headless(session_path: Path, poll: float = 0.2, owner_every: float = 1.0,
                    console: Console | None = None) -> int:
    """`sgtui attach --no-ui`: the progress lines of a session another sgtui writes, as they are written.

    Ends when the owner process is gone: with the report if every run that started ended (0 all ok,
    1 otherwise), or with EXIT_DEAD and a one-line diagnosis if runs never ended (the orchestrator was
    killed): a dead session never looks like it is still running. Ctrl-C leaves the runs going."""
    import time

    from sgtui.export import render
    from sgtui.session import SessionTail
    from sgtui.sessions_index import owner_of, owner_state, session_runs

    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    progress = Progress(console)
    progress.state.source = str(session_path)
    tail = SessionTail(session_path)
    console.print(f"attached to {session_path} (Ctrl-C leaves the runs going)")
    next_owner = 0.0
    announced = False
    try:
        while True:
            for e in tail.poll():
                progress(e)
            for p in tail.problems:
                console.print(f"[yellow]sgtui: warning: {p}[/]")
            tail.problems.clear()
            now = time.monotonic()
            if now >= next_owner:
                next_owner = now + owner_every
                st = progress.state
                state = owner_state(Path(session_path), st) if st.header is not None else "unknown"
                if state == "alive" and not announced:
                    pid = owner_of(Path(session_path), st) or st.header.pid  # type: ignore[union-attr]
                    console.print(f"sgtui pid {pid} is writing it")
                    announced = True
                elif state == "unknown" and st.header is not None and not announced:
                    console.print(f"[yellow]written on {st.header.host or 'an unknown host'}: whether its sgtui is "
                                  "alive cannot be checked from here; following until its runs end[/]")
                    announced = True
                runs = session_runs(st)
                done = bool(runs) and all(r.end is not None for r in runs)
                if state == "gone" or (state == "unknown" and done):
                    for e in tail.poll():  # whatever it wrote before exiting
                        progress(e)
                    break
            time.sleep(poll)
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
