"""The app's runs: start them (attached or detached), learn how they ended, cancel, detach, quit.

Contract: `RunControl` is the App half of `SgtuiApp` that owns the runs (`SgtuiApp` subclasses it and
supplies `_make_hub` and `show_verdict`). Attached runs go through `sgtui.lifecycle.run_session` in one
`@work(thread=True)` worker, the same lifecycle as `--no-ui` and `--detach` (start, map a taken port or
an unwritable session to a fatal error, write the reports); detached runs are a process of their own
(`sgtui.tui.detach`) watched by a worker that lets go when the UI quits (a thread worker must end for
the app to exit; the process, no longer watched, goes on). Quitting, Ctrl-C, SIGHUP and
SIGTERM never leave attached runs orphaned: they cancel the orchestrator, wait for `RunsFinished`,
then quit. Detached runs may be left going (the quit dialog asks).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App
from textual.worker import get_current_worker

from sgtui.config import RunConfig
from sgtui.lifecycle import Outcome, run_session
from sgtui.tui.messages import DetachedStarted, OwnerFound, RunsFinished
from sgtui.tui.screens.dialogs import Choice
from sgtui.tui.screens.launch import LaunchScreen
from sgtui.tui.screens.live import DashboardScreen

if TYPE_CHECKING:
    from sgtui.tui.app_config import Hooks, SessionSpec
    from sgtui.viewmodel.hub import Hub
    from sgtui.viewmodel.views import Snapshot

DETACHED_POLL_S = 0.5  # how often the detached watcher looks whether the UI is quitting


class RunControl(App[int]):
    """Run state and the actions on it."""

    mode: str
    spec: SessionSpec
    hooks: Hooks
    hub: Hub | None
    snapshot: Snapshot | None

    def _make_hub(self, mode: str, paths: list[str], expected: list[str] | None = None,
                  steps: dict[str, int] | None = None, label: str = "live") -> Hub:
        raise NotImplementedError  # SgtuiApp's

    def show_verdict(self) -> None:
        raise NotImplementedError  # SgtuiApp's

    def _init_runs(self) -> None:
        self.orch: Any = None  # the attached orchestrator (set by run_session's on_orchestrator)
        self._runs_done = threading.Event()  # set when the attached runs' worker returns
        self.detached_pid: int | None = None
        self.detached_exit: int | None = None
        self.outcome: Outcome | None = None
        self.started = False
        self.finished = False
        self.statuses: dict[str, str] = {}
        self.fatal = ""
        self.export_paths: list[Path] = []
        self.export_error = ""
        self.quit_after_finish = False  # quit once the runs ended (a stop was asked for)
        self.left_running = False  # quit with runs going in a process of their own
        self._verdict_shown = False

    # -- start -------------------------------------------------------------------------------------
    def start_live(self, runs: list[RunConfig], session_path: Path | None, exports: list[str], *,
                   detach: bool = False, concurrent: bool = False) -> None:
        if session_path is None:
            raise ValueError("live mode needs a session path")
        spec = self.spec
        spec.runs, spec.session_path, spec.exports = list(runs), Path(session_path), list(exports)
        spec.detach, spec.concurrent = detach, concurrent
        expected = [r.label for r in runs]
        steps = {r.label: r.num_steps for r in runs}
        self.started = True
        if detach:
            self.hub = self._make_hub("follow", [str(spec.session_path)], expected, steps)
            self.hub.start()
            self._watch_detached()
        else:
            self.hub = self._make_hub("live", [], expected, steps, label=str(spec.session_path))
            self.hub.start()
            self._run_attached()
        screen = DashboardScreen("live", title=spec.session_path.name)
        if isinstance(self.screen, LaunchScreen):
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def _keep_orchestrator(self, orch: Any) -> None:
        self.orch = orch

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _run_attached(self) -> None:
        """The runs in this process: the session lifecycle, then RunsFinished (always, also on a bug)."""
        spec, hooks, hub = self.spec, self.hooks, self.hub
        assert spec.session_path is not None and hub is not None
        kw = dict(hooks.orchestrator_kwargs)
        if hooks.runner_argv is not None:
            kw["runner_argv"] = hooks.runner_argv
        outcome = Outcome({}, "orchestrator failed: the run worker stopped", started=False)
        try:
            outcome = run_session(spec.runs, spec.session_path, spec.exports, opts=spec.report_options,
                                  subscribers=[hub.push], concurrent=spec.concurrent,
                                  orchestrator_factory=hooks.orchestrator_factory,
                                  on_orchestrator=self._keep_orchestrator, **kw)
        finally:
            self._runs_done.set()
            self.outcome = outcome
            self.post_message(RunsFinished(outcome.statuses, outcome.fatal, outcome.exports,
                                           outcome.export_error))

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _watch_detached(self) -> None:
        """Start the detached orchestrator and wait for its exit; let go (runs going on) when the UI quits."""
        from sgtui.export import EXTENSIONS
        from sgtui.tui import detach

        spec, me = self.spec, get_current_worker()
        assert spec.session_path is not None
        try:
            proc = detach.spawn(spec.runs, spec.session_path, spec.exports, concurrent=spec.concurrent,
                                runner_prefix=self.hooks.runner_prefix, opts=spec.report_options)
        except OSError as e:
            self.post_message(DetachedStarted(0, f"cannot start the orchestrator: {e.strerror or e}"))
            return
        self.post_message(DetachedStarted(proc.pid))
        while True:
            try:
                rc = proc.wait(DETACHED_POLL_S)
                break
            except subprocess.TimeoutExpired:
                if me.is_cancelled:  # the UI is quitting: the runs go on without it
                    return
        base = spec.session_path.with_suffix("")
        paths = [base.with_name(base.name + EXTENSIONS[f]) for f in spec.exports if f in EXTENSIONS]
        self.detached_exit = rc
        self.post_message(RunsFinished({}, "" if rc in (0, 1) else f"orchestrator exited with code {rc}",
                                       [p for p in paths if p.exists()], ""))

    # -- how they ended ------------------------------------------------------------------------------
    def on_detached_started(self, msg: DetachedStarted) -> None:
        if msg.error:
            self.notify(msg.error, severity="error", timeout=30)
            self.finished = True
            return
        self.detached_pid = msg.pid
        self.notify(f"runs detached (pid {msg.pid}); quitting can leave them going", timeout=6)

    def on_runs_finished(self, msg: RunsFinished) -> None:
        self.finished = True
        self.statuses = msg.statuses or {r.key: r.status for r in (self.snapshot.runs if self.snapshot else ())}
        self.fatal = msg.fatal
        self.export_paths = list(msg.exports)
        self.export_error = msg.export_error
        if msg.fatal:
            self.notify(msg.fatal.splitlines()[0], title="runs stopped", severity="error", timeout=30)
        if msg.export_error:
            self.notify(f"reports not written: {msg.export_error}", severity="error", timeout=30)
        if self.hub is not None:
            from sgtui.viewmodel.commands import Finished

            self.hub.command(Finished())
        if self.quit_after_finish:
            self._quit(self.exit_code())
            return
        if self.hooks.auto_verdict and not self._verdict_shown:
            self._verdict_shown = True
            self.show_verdict()

    def runs_going(self) -> bool:
        if not self.started or self.finished:
            return False
        if self.orch is not None or not self.spec.detach:
            return not self._runs_done.is_set()
        return True

    def _followed_runs_going(self) -> bool:
        """A followed session (not started here) with a run still going: its owner can be stopped or left."""
        return self.spec.follow and bool(self.snapshot and any(r.status == "running" for r in self.snapshot.runs))

    def can_cancel(self) -> bool:
        if self.mode == "replay" and not self.started:
            return self._followed_runs_going()
        return self.runs_going()

    def can_detach_ui(self) -> bool:
        """`d` leaves the dashboard with the runs going: possible when they run in a process of their own
        (started detached, or a followed session). Not a hand-off: runs started in this process (the
        orchestrator is a thread here) cannot be moved out; start with --detach for that."""
        if self.mode == "replay" and not self.started:
            return self._followed_runs_going()
        return self.spec.detach and self.runs_going()

    def exit_code(self) -> int:
        if not self.started:
            return 0
        if self.outcome is not None and not self.outcome.started:
            return self.outcome.exit_code  # nothing ran (a taken port, an unwritable session): as --no-ui
        if self.fatal:
            return 1
        st = self.statuses or {r.key: r.status for r in (self.snapshot.runs if self.snapshot else ())}
        if self.detached_exit is not None and not st:
            return self.detached_exit
        return 0 if st and all(s == "ok" for s in st.values()) else 1

    # -- detach, cancel and quit -----------------------------------------------------------------------
    def action_detach_ui(self) -> None:
        if isinstance(self.screen, Choice):
            return
        if not self.can_detach_ui():
            self.notify("runs started in this process stop when it quits; start with --detach (or the form's "
                        "detach) to leave them running", severity="warning", timeout=8)
            return
        self.left_running = True
        self._quit(0)

    def action_cancel_runs(self) -> None:
        if not self.can_cancel():
            self.notify("nothing to cancel", severity="warning")
            return
        running = [r.key for r in self.snapshot.runs if r.status == "running"] if self.snapshot else []
        pending = [r.key for r in self.snapshot.runs if r.status == "pending"] if self.snapshot else []
        question = (f"Cancel {', '.join(running) or 'the runs'}?"
                    + (f" Runs not started yet ({', '.join(pending)}) are skipped." if pending else "")
                    + "\nThe runner gets SIGTERM, ends its phase and stops its engine and trainer process "
                      "groups; anything left gets SIGKILL after the grace period.")

        def done(choice: str | None) -> None:
            if choice == "cancel":
                self.cancel_runs()

        self.push_screen(Choice(question, [("cancel", "Cancel runs", "error"), ("keep", "Keep running", "default")],
                                title="cancel"), done)

    def cancel_runs(self) -> None:
        """Stop the runs cleanly, whichever process holds them."""
        if self.orch is not None:
            self.orch.cancel()
        elif self.detached_pid:
            try:
                os.kill(self.detached_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        elif self.spec.follow and self.spec.paths:
            self._stop_owner()
        self.notify("stopping runs…", timeout=5)

    @work(thread=True, exclusive=True, group="owner", exit_on_error=False)
    def _stop_owner(self) -> None:
        """Find the sgtui process that owns the followed session (reads the session and /proc: IO)."""
        from sgtui.session import SessionReadError
        from sgtui.sessions_index import session_owner

        try:
            pid = session_owner(Path(self.spec.paths[0]))
        except SessionReadError as e:
            self.post_message(OwnerFound(None, str(e)))
            return
        self.post_message(OwnerFound(pid))

    def on_owner_found(self, msg: OwnerFound) -> None:
        if msg.pid is None:
            self.notify(msg.error or "no live sgtui process owns this session", severity="warning")
            return
        try:
            os.kill(msg.pid, signal.SIGTERM)
            self.notify(f"sent SIGTERM to sgtui pid {msg.pid}")
        except ProcessLookupError:
            self.notify("the session's owner is gone", severity="warning")

    def on_terminate_signal(self, sig: int) -> None:
        """SIGHUP (the SSH connection dropped) and SIGTERM (`sgtui stop`): stop attached runs, then quit."""
        if self.runs_going() and not self.spec.detach:
            self.quit_after_finish = True
            self.cancel_runs()
        else:
            self.left_running = self.runs_going()
            self._quit(self.exit_code() if not self.left_running else 0)

    def action_request_quit(self) -> None:
        if isinstance(self.screen, Choice):
            return
        if not self.runs_going():
            self._quit(self.exit_code())
            return
        path = self.spec.session_path
        if self.spec.detach:
            question = (f"Runs are going in a detached process (pid {self.detached_pid}). Leave them running?\n"
                        f"Re-attach: sgtui attach {path}\nStop later: sgtui stop {path}")
            choices = [("leave", "Leave running", "primary"), ("stop", "Stop runs & quit", "error"),
                       ("stay", "Stay", "default")]
        else:
            question = ("Runs are still going in this process; quitting stops them cleanly (SIGTERM to their "
                        "process groups, SIGKILL after the grace period). Start with 'detach' to let runs "
                        "outlive the UI.")
            choices = [("stop", "Stop runs & quit", "error"), ("stay", "Stay", "default")]

        def done(choice: str | None) -> None:
            if choice == "leave":
                self.left_running = True
                self._quit(0)
            elif choice == "stop":
                self.quit_after_finish = True
                self.cancel_runs()

        self.push_screen(Choice(question, choices, title="quit"), done)

    def _quit(self, code: int) -> None:
        self.exit(code, return_code=code)

    def stop_attached_runs(self, timeout: float | None = None) -> None:
        """Cancel attached runs still going (never leave orphans); wait up to `timeout` s for them to end."""
        if self.orch is not None and not self._runs_done.is_set():
            self.orch.cancel()
            if timeout:
                self._runs_done.wait(timeout)
