"""sgtui's terminal UI: launch form -> live dashboard -> verdict, and replay/follow of session files.

API for the CLI (each blocks until the UI quits and returns the process exit code):

    run_live(runs, session_path, exports=("txt", "json"), *, launch=True, explicit=None,
             output_dir=None, use_last_session=True, detach=False, concurrent=False) -> int
        `sgtui` on a terminal. runs: the RunConfigs the CLI built from its flags (device, model,
        pythons resolved). launch=True opens the launch form prefilled with them and, for every
        option not in `explicit` (CLI parameter names given on the command line, e.g.
        {"num_steps", "vllm_port"}; typer: ctx.get_parameter_source(name) is COMMANDLINE; when
        None they are read off sys.argv), with the last session's values from `output_dir`
        (default: session_path's directory). launch=False starts the runs at once. The form runs
        its own preflight (with engine versions), so the CLI need not run its own before the UI.
        The session is written at session_path unless the form changed the runs or the directory.
        Returns 0 when every run ended ok, 1 otherwise; 0 when the user quit from the form.
        Quitting while detached runs go leaves them running and prints how to re-attach.

    run_replay(paths, follow=False, *, speed="1x", playing=False) -> int
        `sgtui replay a.jsonl [b.jsonl ...] [--follow] [--play] [--speed S]`. Runs of all sessions
        become columns. A replay opens at its first event, paused, at 1x (speed="max", playing=True:
        straight to the end).
        follow=True tails files still being written (re-attach after an SSH drop).

    make_app(mode="launch"|"live"|"replay", **same options) -> SgtuiApp
        The factory both functions use; tests, snapshot tests and benchmarks build the app with it.
        Extra hooks (tests, benchmarks): clock (session clock for durations), runner_argv /
        runner_prefix (a stand-in runner), orchestrator_factory (an Orchestrator stand-in),
        orchestrator_kwargs, preflight (a function (runs, output) -> PreflightResult),
        check_imports, refresh_hz (snapshot rate cap; default by mode: hub.LIVE_HZ for live and follow,
        hub.REPLAY_HZ for replay), auto_verdict, on_painted
        (called with each snapshot once it is on screen).

Threads: the hub (`sgtui.tui.hub`) folds events and builds snapshots; the orchestrator runs in a
thread of its own (or, detached, in a process of its own); workers do preflight and file IO.
The event loop only renders snapshots.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable, Sequence

from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.message import Message

from sgtui.config import BACKENDS, RunConfig
from sgtui.options import ReportOptions
from sgtui.tui.hub import LIVE_HZ, REPLAY_HZ, Hub
from sgtui.tui.launch_model import LaunchOptions, last_session
from sgtui.tui.screens.dialogs import Choice
from sgtui.tui.screens.launch import CheckLine, LaunchScreen, PreflightResult
from sgtui.tui.screens.live import DashboardScreen
from sgtui.tui.screens.replay import ReplayScreen
from sgtui.tui.screens.verdict import VerdictScreen
from sgtui.tui.views import Snapshot

MODES = ("launch", "live", "replay")


class SnapshotReady(Message):
    """Latest state: a backlog collapses to the newest one."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class HubError(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class RunsFinished(Message):
    def __init__(self, statuses: dict[str, str], fatal: str, exports: list[Path], export_error: str) -> None:
        super().__init__()
        self.statuses = statuses
        self.fatal = fatal
        self.exports = exports
        self.export_error = export_error


class DetachedStarted(Message):
    def __init__(self, pid: int, error: str = "") -> None:
        super().__init__()
        self.pid = pid
        self.error = error


class OwnerFound(Message):
    def __init__(self, pid: int | None, error: str = "") -> None:
        super().__init__()
        self.pid = pid
        self.error = error


_engine_versions: dict[tuple[str, str, str], tuple[bool, str]] = {}
_versions_lock = threading.Lock()


def default_preflight(runs: list[RunConfig], output: str, check_imports: bool = True) -> PreflightResult:
    """sgtui.preflight's checks, engine versions cached per venv (importing vLLM takes seconds), GPUs listed."""
    from sgtui import gpu, preflight

    checks = [CheckLine(c.name, c.ok, c.message, c.fix)
              for c in preflight.run_checks(runs, Path(output), check_imports=False)]
    if check_imports:
        seen = set()
        for r in runs:
            key = (r.python, r.backend, r.device)
            if key in seen or not Path(r.python).exists():
                continue
            seen.add(key)
            with _versions_lock:
                cached = _engine_versions.get(key)
            if cached is None:
                cached = preflight.engine_version(r.python, r.backend, r.device)  # imports as the runner will
                if cached[0]:
                    with _versions_lock:
                        _engine_versions[key] = cached
            ok, what = cached
            checks.append(CheckLine(f"{r.backend} venv", ok, f"{r.backend} {what}" if ok else f"cannot import "
                                    f"{r.backend}: {what}", "" if ok else "re-run `sgtui setup`"))
    devices = gpu.list_devices()
    if devices:
        for d in devices:
            checks.append(CheckLine(f"GPU {d.index}", True, f"{d.name}: {d.free_mib / 1024:.1f} of "
                                    f"{d.total_mib / 1024:.1f} GiB free", info=True))
    else:
        checks.append(CheckLine("GPUs", True, f"{gpu.nvml_error() or 'none'}: runs on CPU, memory not measured",
                                info=True))
    leftovers = preflight.find_leftovers()
    return PreflightResult(checks, leftovers)


class SgtuiApp(App[int]):
    TITLE = "sgtui"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { background: $background; }
    """
    # Ctrl-C arrives as a key in Textual's raw mode (no SIGINT). Textual's default only says "press ctrl+q";
    # here it asks the same question as quitting: attached runs are stopped cleanly, never orphaned.
    BINDINGS = [Binding("ctrl+q", "request_quit", "Quit", show=False, priority=True),
                Binding("ctrl+c", "request_quit", "Quit", show=False, priority=True),
                Binding("f1,question_mark", "help", "Help", show=False)]

    def __init__(self, mode: str = "launch", *, runs: list[RunConfig] | None = None,
                 session_path: str | Path | None = None, output_dir: str | Path | None = None,
                 exports: Sequence[str] = ("txt", "json"), paths: Sequence[str | Path] = (), follow: bool = False,
                 launch_options: LaunchOptions | None = None, launch_note: str = "", detach: bool = False,
                 concurrent: bool = False, speed: str = "1x", playing: bool = False, refresh_hz: float | None = None,
                 clock: Callable[[], float] | None = None,
                 runner_argv: Callable[[RunConfig], list[str]] | None = None, runner_prefix: list[str] | None = None,
                 preflight: Callable[[list[RunConfig], str], PreflightResult] | None = None,
                 check_imports: bool = True, orchestrator_kwargs: dict | None = None,
                 orchestrator_factory: Callable[..., object] | None = None, auto_verdict: bool = True,
                 on_painted: Callable[[Snapshot], None] | None = None,
                 report_options: ReportOptions | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        self.runs = list(runs or [])
        self.session_path = Path(session_path) if session_path else None
        self.output_dir = Path(output_dir) if output_dir else (self.session_path.parent if self.session_path
                                                               else Path("sessions"))
        self.exports = list(exports)
        self.report_options = report_options or ReportOptions()  # for the reports written at the end
        self.paths = [str(p) for p in paths]
        self.follow = follow
        self.launch_options = launch_options
        self.launch_note = launch_note
        self.detach = detach
        self.concurrent = concurrent
        self.speed = speed
        self.playing = playing
        self.refresh_hz = refresh_hz
        self.clock = clock or time.time
        self.runner_prefix = list(runner_prefix) if runner_prefix else None
        if runner_argv is None and self.runner_prefix:
            prefix = self.runner_prefix
            runner_argv = lambda c: prefix + ["--config", c.to_json()]  # noqa: E731
        self.runner_argv = runner_argv
        self.preflight_fn = preflight
        self.check_imports = check_imports
        self.orchestrator_kwargs = dict(orchestrator_kwargs or {})
        self.orchestrator_factory = orchestrator_factory
        self.auto_verdict = auto_verdict
        self.on_painted = on_painted
        # state
        self.hub: Hub | None = None
        self.snapshot: Snapshot | None = None
        self.orch = None
        self.orch_thread: threading.Thread | None = None
        self.detached_pid: int | None = None
        self.detached_exit: int | None = None
        self._detached_proc = None
        self.started = False
        self.finished = False
        self.statuses: dict[str, str] = {}
        self.fatal = ""
        self.export_paths: list[Path] = []
        self.export_error = ""
        self.quit_after_finish = False
        self.left_running = False
        self._verdict_shown = False

    # -- start-up ---------------------------------------------------------------------------
    def _tune_runtime(self) -> None:
        """Process settings for a UI that shares the interpreter with busy threads (measured with
        benchmarks/ui_rate.py): a 1 ms GIL switch interval, so the event loop gets the GIL back
        quickly from the fold/summary threads instead of queueing 5 ms at every wake-up; and fewer,
        larger young-generation collections (the hub also freezes folded events out of the
        collector's reach): at 10k events/s the default thresholds spent ~7% of the CPU in
        collections, with 50-100 ms full ones. Restored when the app unmounts."""
        self._saved_runtime = (sys.getswitchinterval(), gc.get_threshold())
        sys.setswitchinterval(0.001)
        gc.set_threshold(5000, 20, 100)

    def _restore_runtime(self) -> None:
        saved = getattr(self, "_saved_runtime", None)
        if saved is not None:
            sys.setswitchinterval(saved[0])
            gc.set_threshold(*saved[1])
            gc.unfreeze()  # what the hub froze can be collected again once the app is gone
            self._saved_runtime = None

    def _install_signals(self) -> None:
        """SIGHUP (the SSH connection dropped without tmux) and SIGTERM (`sgtui stop SESSION`) must
        never leave attached runs orphaned: both stop the runs cleanly, then quit. Detached runs are
        left going. Only possible from the main thread (where the CLI runs the app)."""
        self._signals: list[int] = []
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.on_terminate_signal, sig)
                self._signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass

    def _remove_signals(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for sig in getattr(self, "_signals", []):
            loop.remove_signal_handler(sig)
        self._signals = []

    def on_terminate_signal(self, sig: int) -> None:
        if self.runs_going() and not self.detach:
            self.quit_after_finish = True
            self.cancel_runs()
        else:
            self.left_running = self.runs_going()
            self._quit(self.exit_code() if not self.left_running else 0)

    def on_mount(self) -> None:
        self._install_signals()
        self._tune_runtime()
        if self.mode == "launch":
            opts = self.launch_options or LaunchOptions.from_runs(self.runs, self.output_dir, self.exports)
            self.push_screen(LaunchScreen(opts, self.launch_note))
        elif self.mode == "live":
            self.start_live(self.runs, self.session_path, self.exports, detach=self.detach,
                            concurrent=self.concurrent)
        else:
            self.start_replay()

    def _make_hub(self, mode: str, paths: list[str], expected: list[str] | None = None,
                  steps: dict[str, int] | None = None, label: str = "live") -> Hub:
        hz = self.refresh_hz or (REPLAY_HZ if mode == "replay" else LIVE_HZ)
        return Hub(self._post_snapshot, mode=mode, paths=paths, expected=expected, expected_steps=steps,
                   refresh_hz=hz, speed=self.speed, playing=self.playing, clock=self.clock,
                   on_error=self._post_hub_error, source_label=label, options=self.report_options)

    def start_replay(self) -> None:
        mode = "follow" if self.follow else "replay"
        self.hub = self._make_hub(mode, self.paths)
        self.hub.start()
        title = ", ".join(Path(p).name for p in self.paths)
        screen = DashboardScreen("follow", title=title) if self.follow else ReplayScreen(title=title)
        self.push_screen(screen)

    def session_path_for(self, runs: list[RunConfig], output: str | Path) -> Path:
        """The CLI's session path when the form kept its runs and directory, else a new one (does IO)."""
        from sgtui.session import new_session_path

        labels = [r.label for r in runs]
        if (self.session_path is not None and Path(output) == self.session_path.parent
                and labels == [r.label for r in self.runs] and not self.session_path.exists()):
            return self.session_path
        return new_session_path(output, labels)

    def start_from_launch(self, runs: list[RunConfig], opts: LaunchOptions, session_path: Path) -> None:
        self.output_dir = Path(opts.output)
        self.start_live(runs, session_path, opts.export_list(), detach=opts.detach, concurrent=opts.concurrent)

    def start_live(self, runs: list[RunConfig], session_path: Path | None, exports: list[str], *,
                   detach: bool = False, concurrent: bool = False) -> None:
        if session_path is None:
            raise ValueError("live mode needs a session path")
        self.runs, self.session_path, self.exports = list(runs), Path(session_path), list(exports)
        self.detach, self.concurrent = detach, concurrent
        expected = [r.label for r in runs]
        steps = {r.label: r.num_steps for r in runs}
        self.started = True
        if detach:
            self.hub = self._make_hub("follow", [str(self.session_path)], expected, steps)
            self.hub.start()
            self._spawn_detached()
        else:
            from sgtui.orchestrator import Orchestrator

            self.hub = self._make_hub("live", [], expected, steps, label=str(self.session_path))
            kw = dict(self.orchestrator_kwargs)
            if self.runner_argv is not None:
                kw["runner_argv"] = self.runner_argv
            factory = self.orchestrator_factory or Orchestrator
            self.orch = factory(runs, self.session_path, subscribers=[self.hub.push], concurrent=concurrent, **kw)
            self.hub.start()
            self.orch_thread = threading.Thread(target=self._orchestrate, name="sgtui-orchestrator", daemon=True)
            self.orch_thread.start()
        screen = DashboardScreen("live", title=self.session_path.name)
        if isinstance(self.screen, LaunchScreen):
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    # -- the orchestrator (attached: a thread; detached: a process) ------------------------------
    def _orchestrate(self) -> None:
        assert self.orch is not None and self.session_path is not None
        statuses: dict[str, str] = {}
        fatal = ""
        from sgtui.portlock import PortBusy

        try:
            statuses = self.orch.run_sync()
            fatal = self.orch.fatal
        except PortBusy as e:
            fatal = str(e)
        except OSError as e:
            fatal = f"cannot write session {self.session_path}: {e.strerror or e}"
        except Exception as e:  # noqa: BLE001 - shown in the UI
            fatal = f"orchestrator failed: {type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}"
        paths, err = self._write_exports() if not fatal or statuses else ([], "")
        self.post_message(RunsFinished(statuses, fatal, paths, err))

    def _write_exports(self) -> tuple[list[Path], str]:
        if not self.exports or self.session_path is None or not self.session_path.exists():
            return [], ""
        try:
            from sgtui.export import load_sessions, write_exports

            return write_exports(load_sessions([self.session_path]), self.session_path.with_suffix(""),
                                 self.exports, self.report_options), ""
        except Exception as e:  # noqa: BLE001 - the session is safe; say why the reports are not
            return [], f"{type(e).__name__}: {e}"

    def _spawn_detached(self) -> None:
        def target() -> None:
            from sgtui.tui import detach

            try:
                proc = detach.spawn(self.runs, self.session_path, self.exports, concurrent=self.concurrent,  # type: ignore[arg-type]
                                    runner_prefix=self.runner_prefix, opts=self.report_options)
            except OSError as e:
                self.post_message(DetachedStarted(0, f"cannot start the orchestrator: {e.strerror or e}"))
                return
            self._detached_proc = proc
            self.post_message(DetachedStarted(proc.pid))
            rc = proc.wait()
            from sgtui.export import EXTENSIONS

            base = self.session_path.with_suffix("")  # type: ignore[union-attr]
            paths = [base.with_name(base.name + EXTENSIONS[f]) for f in self.exports if f in EXTENSIONS]
            paths = [p for p in paths if p.exists()]
            self.detached_exit = rc
            self.post_message(RunsFinished({}, "" if rc in (0, 1) else f"orchestrator exited with code {rc}",
                                           paths, ""))

        threading.Thread(target=target, name="sgtui-detached", daemon=True).start()

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
            self.hub.command("finished")
        if self.quit_after_finish:
            self._quit(self.exit_code())
            return
        if self.auto_verdict and not self._verdict_shown:
            self._verdict_shown = True
            self.show_verdict()

    # -- snapshots -----------------------------------------------------------------------------------
    def _post_snapshot(self, snap: Snapshot) -> None:
        self.post_message(SnapshotReady(snap))

    def _post_hub_error(self, text: str) -> None:
        self.post_message(HubError(text))

    def on_snapshot_ready(self, msg: SnapshotReady) -> None:
        self.snapshot = msg.snapshot
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down
            return
        show = getattr(screen, "show", None)
        if show is not None:
            show(msg.snapshot)
        if isinstance(screen, DashboardScreen) and screen.view_paused:
            return  # no ack: the hub folds on but builds no snapshots nobody looks at
        self.call_after_refresh(self._painted, msg.snapshot)

    def _painted(self, snap: Snapshot) -> None:
        if self.on_painted is not None:
            self.on_painted(snap)
        self.ack_snapshot()

    def ack_snapshot(self) -> None:
        if self.hub is not None:
            self.hub.ack()

    def on_hub_error(self, msg: HubError) -> None:
        self.notify(msg.text.splitlines()[0], title="error", severity="error", timeout=30)

    # -- what the screens ask ---------------------------------------------------------------------------
    def run_preflight(self, runs: list[RunConfig], output: str) -> PreflightResult:
        """Called from the launch screen's worker thread."""
        if self.preflight_fn is not None:
            return self.preflight_fn(runs, output)
        return default_preflight(runs, output, self.check_imports)

    def files_info(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.mode == "replay" and not self.started:
            for p in self.paths:
                out.append(("session", p))
            return out
        if self.session_path is not None:
            out.append(("session", str(self.session_path)))
        if self.export_paths:
            out.append(("reports", ", ".join(str(p) for p in self.export_paths)))
        elif self.export_error:
            out.append(("reports", f"not written: {self.export_error}"))
        elif self.exports and self.started:
            out.append(("reports", f"{', '.join(self.exports)} written when the runs end"))
        if self.detached_pid:
            from sgtui.tui.detach import log_path

            out.append(("log", str(log_path(self.session_path))))  # type: ignore[arg-type]
        return out

    def show_verdict(self) -> None:
        try:
            if not isinstance(self.screen, VerdictScreen):
                self.push_screen(VerdictScreen())
        except ScreenStackError:  # shutting down
            pass

    def runs_going(self) -> bool:
        if not self.started or self.finished:
            return False
        if self.orch_thread is not None:
            return self.orch_thread.is_alive()
        return self.detach

    def can_cancel(self) -> bool:
        if self.mode == "replay" and not self.started:
            return self.follow and bool(self.snapshot and any(r.status == "running" for r in self.snapshot.runs))
        return self.runs_going()

    def exit_code(self) -> int:
        if not self.started:
            return 0
        if self.fatal:
            return 1
        st = self.statuses or {r.key: r.status for r in (self.snapshot.runs if self.snapshot else ())}
        if self.detached_exit is not None and not st:
            return self.detached_exit
        return 0 if st and all(s == "ok" for s in st.values()) else 1

    # -- detach, cancel and quit -----------------------------------------------------------------------------
    def can_detach_ui(self) -> bool:
        """`d` leaves the dashboard with the runs going: possible when they run in a process of their own
        (started detached, or a followed session). Not a hand-off: runs started in this process (the
        orchestrator is a thread here) cannot be moved out; start with --detach for that."""
        if self.mode == "replay" and not self.started:
            return self.follow and bool(self.snapshot and any(r.status == "running" for r in self.snapshot.runs))
        return self.detach and self.runs_going()

    def action_help(self) -> None:
        """`?`/F1 (and `h` on the dashboards): the keys of the screen shown; again (or Escape) closes."""
        from sgtui.tui.screens.help import HelpScreen

        screen = self.screen
        if isinstance(screen, HelpScreen):
            screen.dismiss(None)
            return
        title = {ReplayScreen: "replay", DashboardScreen: "dashboard", VerdictScreen: "verdict",
                 LaunchScreen: "launch"}.get(type(screen), type(screen).__name__)
        self.push_screen(HelpScreen(screen, title))

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
        elif self.follow and self.paths:
            self._stop_owner()
        self.notify("stopping runs…", timeout=5)

    def _stop_owner(self) -> None:
        def target() -> None:
            from sgtui.session import SessionReadError
            from sgtui.sessions_index import session_owner

            try:
                pid = session_owner(Path(self.paths[0]))
            except SessionReadError as e:
                self.post_message(OwnerFound(None, str(e)))
                return
            self.post_message(OwnerFound(pid))

        threading.Thread(target=target, name="sgtui-owner", daemon=True).start()

    def on_owner_found(self, msg: OwnerFound) -> None:
        if msg.pid is None:
            self.notify(msg.error or "no live sgtui process owns this session", severity="warning")
            return
        try:
            os.kill(msg.pid, signal.SIGTERM)
            self.notify(f"sent SIGTERM to sgtui pid {msg.pid}")
        except ProcessLookupError:
            self.notify("the session's owner is gone", severity="warning")

    def action_request_quit(self) -> None:
        if isinstance(self.screen, Choice):
            return
        if not self.runs_going():
            self._quit(self.exit_code())
            return
        if self.detach:
            question = (f"Runs are going in a detached process (pid {self.detached_pid}). Leave them running?\n"
                        f"Re-attach: sgtui attach {self.session_path}\nStop later: sgtui stop {self.session_path}")
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

    async def action_quit(self) -> None:
        self.action_request_quit()

    def on_unmount(self) -> None:
        self._restore_runtime()
        self._remove_signals()
        # leaving the app never leaves attached runs orphaned (detached ones live in their own process)
        if self.orch is not None and self.orch_thread is not None and self.orch_thread.is_alive():
            self.orch.cancel()
        if self.hub is not None:
            self.hub.stop(timeout=0.5)

    def shutdown(self, timeout: float = 60.0) -> None:
        """After the app exited: stop attached runs (never leave orphans), stop the hub."""
        if self.orch is not None and self.orch_thread is not None and self.orch_thread.is_alive():
            self.orch.cancel()
            self.orch_thread.join(timeout)
        if self.hub is not None:
            self.hub.stop()


#: CLI short flags and the parameter they stand for (for `explicit_from_argv`).
_SHORT_FLAGS = {"-o": "output"}


def explicit_from_argv(argv: Sequence[str]) -> set[str]:
    """CLI parameter names given on a command line (`--num-steps 5` -> "num_steps"): the fallback
    when the CLI does not say which options the user gave, so the last session never overrides them."""
    out = set()
    for arg in argv:
        if arg.startswith("--"):
            out.add(arg[2:].split("=", 1)[0].replace("-", "_"))
        elif arg in _SHORT_FLAGS:
            out.add(_SHORT_FLAGS[arg])
    return out


def make_app(mode: str = "launch", *, runs: list[RunConfig] | None = None, session_path: str | Path | None = None,
             output_dir: str | Path | None = None, exports: Sequence[str] = ("txt", "json"),
             paths: Sequence[str | Path] = (), follow: bool = False, explicit: Iterable[str] | None = None,
             use_last_session: bool = True, **kw) -> SgtuiApp:
    """Build the app as the CLI runs it (see the module docstring). Reads the last session's header
    for the launch form here, before the event loop exists."""
    out = Path(output_dir) if output_dir else (Path(session_path).parent if session_path else Path("sessions"))
    launch_options = kw.pop("launch_options", None)
    note = ""
    if mode == "launch" and launch_options is None:
        runs = list(runs or [])
        pythons = {b: next((r.python for r in runs if r.backend == b), "") for b in BACKENDS}
        ports = {b: next((r.port for r in runs if r.backend == b), p) for b, p in (("vllm", 8100), ("sglang", 8200))}
        launch_options = LaunchOptions.from_runs(runs, out, exports, ports=ports, pythons=pythons)
        launch_options.detach = bool(kw.get("detach", False))
        launch_options.concurrent = bool(kw.get("concurrent", False))
        if use_last_session:
            last, path, missing = last_session(out)
            if last:
                given = set(explicit) if explicit is not None else explicit_from_argv(sys.argv[1:])
                launch_options.merge_last(last, given, missing=missing)
                note = f"prefilled from {path.name if path else 'the last session'}"
    return SgtuiApp(mode, runs=runs, session_path=session_path, output_dir=out, exports=exports, paths=paths,
                    follow=follow, launch_options=launch_options, launch_note=note, **kw)


def _run(app: SgtuiApp) -> int:
    try:
        code = app.run()
    finally:
        app.shutdown()
    if app.left_running and app.session_path is not None:
        print(f"sgtui: runs continue in the background (pid {app.detached_pid}).\n"
              f"  re-attach: sgtui attach {app.session_path}\n"
              f"  stop:      sgtui stop {app.session_path}", file=sys.stderr)
    elif app.left_running and app.follow and app.paths:
        print(f"sgtui: detached; runs go on.\n  re-attach: sgtui attach {app.paths[0]}\n"
              f"  stop:      sgtui stop {app.paths[0]}", file=sys.stderr)
    elif app.session_path is not None and app.started:
        print(f"sgtui: session saved: {app.session_path}", file=sys.stderr)
        for p in app.export_paths:
            print(f"sgtui: wrote {p}", file=sys.stderr)
    return int(code) if code is not None else (app.return_code or 0)


def run_live(runs: list[RunConfig], session_path: str | Path, exports: Sequence[str] = ("txt", "json"), *,
             launch: bool = True, explicit: Iterable[str] | None = None, output_dir: str | Path | None = None,
             use_last_session: bool = True, detach: bool = False, concurrent: bool = False, **kw) -> int:
    app = make_app("launch" if launch else "live", runs=runs, session_path=session_path, output_dir=output_dir,
                   exports=exports, explicit=explicit, use_last_session=use_last_session, detach=detach,
                   concurrent=concurrent, **kw)
    return _run(app)


def run_replay(paths: Sequence[str | Path], follow: bool = False, *, speed: str = "1x", playing: bool = False,
               **kw) -> int:
    app = make_app("replay", paths=paths, follow=follow, speed=speed, playing=playing, **kw)
    return _run(app)
