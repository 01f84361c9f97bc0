"""Headless runs (`--no-ui`, or no terminal): progress on stderr with rich, the report on stdout."""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Console

from sgtui.config import RunConfig
from sgtui.events import Error, Event, Phase, RunEnd, RunStart
from sgtui.state import SessionState, step_summary


class Progress:
    """One stderr line per phase end, step summary, error and run end; the state is folded as events come."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.state = SessionState("live")
        self.lock = threading.Lock()

    def __call__(self, e: Event) -> None:
        with self.lock:
            self.state.apply(e)
            c = self.console
            if isinstance(e, RunStart):
                c.print(f"[bold]{e.run}[/]: {e.backend} {e.engine_version} strategy={e.strategy} on {e.device}")
            elif isinstance(e, Phase) and e.edge == "end":
                run = self.state.runs[e.run]
                span = run.steps[e.step].phases.get(e.name)
                dur = f"{span.duration:.2f}s" if span and span.duration is not None else "?"
                mark = "" if e.ok else " [red]FAILED[/]"
                where = f"step {e.step}" if e.step else "setup"
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


def run_headless(runs: list[RunConfig], session_path: Path, exports: list[str], concurrent: bool = False) -> int:
    from sgtui.export import render, write_exports
    from sgtui.orchestrator import Orchestrator

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    progress = Progress(console)
    console.print(f"session: {session_path}")
    orch = Orchestrator(runs, session_path, subscribers=[progress], concurrent=concurrent)
    try:
        statuses = orch.run_sync()
    except OSError as e:
        console.print(f"[red]sgtui: error: cannot write session {session_path}: {e.strerror or e}[/]")
        return 2
    if orch.fatal:
        console.print(f"[red]sgtui: error: {orch.fatal}; runs were stopped[/]")
    state = progress.state
    state.source = str(session_path)
    print(render("txt", [state]), end="")
    if exports:
        for p in write_exports([state], session_path.with_suffix(""), exports):
            console.print(f"wrote {p}")
    console.print(f"session saved: {session_path}")
    return 0 if statuses and all(s == "ok" for s in statuses.values()) and not orch.fatal else 1
