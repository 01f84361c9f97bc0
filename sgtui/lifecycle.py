"""One session's run lifecycle, the same for every front end (headless CLI, detached orchestrator, the UI).

    outcome = run_session(runs, session_path, ["txt", "json"], opts=opts, subscribers=[progress])
    outcome.statuses / .fatal / .exports / .export_error / .started / .exit_code

Why one place: what counts as "nothing ran" (exit 2), how a taken port or an unwritable session is worded,
and that the reports are written from the *saved* session (what `sgtui report` would write later) must not
differ between `--no-ui`, `--detach` and the UI. It never raises for a run's failure: every error becomes
`fatal` (the runs stopped or never started) or `export_error` (the session is safe, the reports are not).
The callers keep their own way of showing the outcome. No Textual, no rich.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sgtui.config import RunConfig
from sgtui.events import Event
from sgtui.options import ReportOptions

if TYPE_CHECKING:
    from sgtui.orchestrator import Orchestrator

#: Exit code when nothing ran: a port another sgtui holds, a session file that cannot be created.
EXIT_NOT_STARTED = 2


@dataclass(frozen=True)
class Outcome:
    """How a session's runs ended, and what was written."""

    statuses: dict[str, str]  # run label -> status ("ok", "failed", "cancelled", ...)
    fatal: str = ""  # "" or why runs were stopped / never started (the one-line reason first)
    exports: list[Path] = field(default_factory=list)  # report files written
    export_error: str = ""  # "" or why reports were not written (the session is safe)
    started: bool = True  # False: nothing ran (port busy, cannot write the session)

    @property
    def exit_code(self) -> int:
        """2 if nothing ran, 0 if every run ended ok and nothing stopped them, else 1."""
        if not self.started:
            return EXIT_NOT_STARTED
        ok = bool(self.statuses) and all(s == "ok" for s in self.statuses.values())
        return 0 if ok and not self.fatal else 1

    @property
    def headline(self) -> str:
        """The first line of `fatal` (a traceback may follow it)."""
        return self.fatal.splitlines()[0] if self.fatal else ""


def run_session(runs: list[RunConfig], session_path: Path, exports: Sequence[str], *,
                opts: ReportOptions = ReportOptions(), subscribers: Sequence[Callable[[Event], None]] = (),
                concurrent: bool = False, interleave: bool = False,
                orchestrator_factory: Callable[..., Orchestrator] | None = None,
                on_orchestrator: Callable[[Orchestrator], None] | None = None,
                **orchestrator_kwargs) -> Outcome:
    """Run `runs` into `session_path` (blocking, in this thread), then write `exports` next to it.

    `on_orchestrator` gets the orchestrator before it runs (a UI keeps it to cancel the runs from another
    thread); `orchestrator_factory` replaces `Orchestrator` (tests); other kwargs go to it (runner_argv, ...)."""
    from sgtui.portlock import PortBusy

    session_path = Path(session_path)
    if orchestrator_factory is None:
        from sgtui.orchestrator import Orchestrator

        orchestrator_factory = Orchestrator
    statuses: dict[str, str] = {}
    orch = None
    try:
        orch = orchestrator_factory(runs, session_path, subscribers=list(subscribers), concurrent=concurrent,
                                    interleave=interleave, **orchestrator_kwargs)
        if on_orchestrator is not None:
            on_orchestrator(orch)
        statuses = orch.run_sync()
        fatal = orch.fatal
    except PortBusy as e:  # before the session exists: nothing ran
        return Outcome({}, str(e), started=False)
    except OSError as e:  # the orchestrator raises it only when the session cannot be created
        return Outcome({}, f"cannot write session {session_path}: {e.strerror or e}", started=False)
    except Exception as e:  # noqa: BLE001 - a bug must end as an outcome (the UI shows it, the CLI prints it)
        fatal = f"orchestrator failed: {type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"
        if orch is None:  # not even built (bad arguments): nothing ran
            return Outcome({}, fatal, started=False)
        statuses = dict(getattr(orch, "statuses", {}) or {})
    paths, err = write_reports(session_path, exports, opts)
    return Outcome(statuses, fatal, paths, err, started=True)


def write_reports(session_path: Path, exports: Sequence[str], opts: ReportOptions = ReportOptions()
                  ) -> tuple[list[Path], str]:
    """The reports of the saved session next to it (`<session>.txt`, ...), as `sgtui report` would write them
    later; ([], why) when they cannot be. No session file (nothing was recorded): ([], "")."""
    if not exports or not session_path.exists():
        return [], ""
    from sgtui.export import ExportError, load_sessions, write_exports

    try:
        return write_exports(load_sessions([session_path]), session_path.with_suffix(""), list(exports), opts), ""
    except ExportError as e:  # says itself which file and why
        return [], str(e)
    except Exception as e:  # noqa: BLE001 - the session is safe; say why the reports are not
        return [], f"{type(e).__name__}: {e}"
