"""sgtui's terminal UI: launch form -> live dashboard -> verdict, and replay/follow of session files.

API for the CLI (each blocks until the UI quits and returns the process exit code):

    run_live(runs, session_path, exports=DEFAULT_EXPORTS, *, launch=True, explicit=None,
             output_dir=None, use_last_session=True, detach=False, concurrent=False) -> int
        `sgtui` on a terminal. runs: the RunConfigs the CLI built from its flags (device, model,
        pythons resolved). launch=True opens the launch form prefilled with them and, for every
        option not in `explicit` (CLI parameter names given on the command line, e.g.
        {"num_steps", "vllm_port"}; typer: ctx.get_parameter_source(name) is COMMANDLINE; when
        None they are read off sys.argv), with the last session's values from `output_dir`
        (default: session_path's directory). launch=False starts the runs at once. The form runs
        its own preflight (with engine versions), so the CLI need not run its own before the UI.
        The session is written at session_path unless the form changed the runs or the directory.
        Returns 0 when every run ended ok, 1 otherwise, 2 when nothing ran (a port another sgtui
        holds, an unwritable session: `sgtui.lifecycle`, as --no-ui); 0 when the user quit from the form.
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
        (called with each snapshot once it is on screen). The keywords are sorted into an
        `app_config.AppConfig` (SessionSpec, Playback, Hooks); `SgtuiApp(AppConfig(...))` takes one directly.

Threads: the hub (`sgtui.viewmodel.hub`) folds events and builds snapshots; everything else off the
event loop is a Textual `@work(thread=True)` worker: the runs (`sgtui.lifecycle.run_session`, or the
detached process's watcher, in `run_control.py`), the launch form's preflight and start, finding a
followed session's owner. The event loop only renders snapshots. Screens reach the app only through
`sgtui.tui.host.UiHost`, so they never import this module.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from textual.app import ScreenStackError
from textual.binding import Binding

from sgtui.config import BACKENDS, DEFAULT_EXPORTS, DEFAULT_PORTS, SESSIONS_DIR, RunConfig
from sgtui.tui.app_config import MODES, AppConfig, Hooks, Playback, SessionSpec
from sgtui.tui.messages import HubError, SnapshotReady
from sgtui.tui.run_control import RunControl
from sgtui.tui.screens.launch import LaunchScreen
from sgtui.tui.screens.live import DashboardScreen
from sgtui.tui.screens.replay import ReplayScreen
from sgtui.tui.screens.verdict import VerdictScreen
from sgtui.viewmodel.hub import LIVE_HZ, REPLAY_HZ, Hub
from sgtui.viewmodel.launch_model import LaunchOptions, last_session
from sgtui.viewmodel.preflight_view import PreflightResult, default_preflight
from sgtui.viewmodel.views import Snapshot

__all__ = ["MODES", "AppConfig", "Hooks", "Playback", "SessionSpec", "SgtuiApp", "explicit_from_argv", "make_app",
           "run_live", "run_replay"]


class SgtuiApp(RunControl):
    """The screens' host (`sgtui.tui.host.UiHost`): hubs, snapshots, screens; the runs are `RunControl`'s."""

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

    def __init__(self, mode: str | AppConfig = "launch", **options: Any) -> None:
        """`SgtuiApp(AppConfig(...))`, or `SgtuiApp(mode, **make_app's keywords)` (sorted by AppConfig.build)."""
        super().__init__()
        config = mode if isinstance(mode, AppConfig) else AppConfig.build(mode, **options)
        if isinstance(mode, AppConfig) and options:
            raise TypeError("SgtuiApp(AppConfig, ...): options go into the AppConfig")
        self.config = config
        self.mode = config.mode
        self.spec, self.playback, self.hooks = config.session, config.playback, config.hooks
        self.hub: Hub | None = None
        self.snapshot: Snapshot | None = None
        self._init_runs()

    # the spec's fields the CLI and tests read on the app
    @property
    def session_path(self) -> Path | None:
        return self.spec.session_path

    @property
    def follow(self) -> bool:
        return self.spec.follow

    @property
    def paths(self) -> list[str]:
        return self.spec.paths

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

    def on_mount(self) -> None:
        self._install_signals()
        self._tune_runtime()
        spec = self.spec
        if self.mode == "launch":
            opts = spec.launch_options or LaunchOptions.from_runs(spec.runs, spec.output_dir, spec.exports)
            self.push_screen(LaunchScreen(opts, spec.launch_note))
        elif self.mode == "live":
            self.start_live(spec.runs, spec.session_path, spec.exports, detach=spec.detach,
                            concurrent=spec.concurrent)
        else:
            self.start_replay()

    def _make_hub(self, mode: str, paths: list[str], expected: list[str] | None = None,
                  steps: dict[str, int] | None = None, label: str = "live") -> Hub:
        pb = self.playback
        hz = pb.refresh_hz or (REPLAY_HZ if mode == "replay" else LIVE_HZ)
        return Hub(self._post_snapshot, mode=mode, paths=paths, expected=expected, expected_steps=steps,
                   refresh_hz=hz, speed=pb.speed, playing=pb.playing, clock=self.hooks.clock,
                   on_error=self._post_hub_error, source_label=label, options=self.spec.report_options)

    def start_replay(self) -> None:
        mode = "follow" if self.spec.follow else "replay"
        self.hub = self._make_hub(mode, self.spec.paths)
        self.hub.start()
        title = ", ".join(Path(p).name for p in self.spec.paths)
        screen = DashboardScreen("follow", title=title) if self.spec.follow else ReplayScreen(title=title)
        self.push_screen(screen)

    def session_path_for(self, runs: list[RunConfig], output: str | Path) -> Path:
        """The CLI's session path when the form kept its runs and directory, else a new one (does IO)."""
        from sgtui.session import new_session_path

        labels, path = [r.label for r in runs], self.spec.session_path
        if (path is not None and Path(output) == path.parent and labels == [r.label for r in self.spec.runs]
                and not path.exists()):
            return path
        return new_session_path(output, labels)

    def start_from_launch(self, runs: list[RunConfig], opts: LaunchOptions, session_path: Path) -> None:
        self.spec.output_dir = Path(opts.output)
        self.start_live(runs, session_path, opts.export_list(), detach=opts.detach, concurrent=opts.concurrent)

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
        if self.hooks.on_painted is not None:
            self.hooks.on_painted(snap)
        self.ack_snapshot()

    def ack_snapshot(self) -> None:
        if self.hub is not None:
            self.hub.ack()

    def on_hub_error(self, msg: HubError) -> None:
        self.notify(msg.text.splitlines()[0], title="error", severity="error", timeout=30)

    # -- what the screens ask ---------------------------------------------------------------------------
    def run_preflight(self, runs: list[RunConfig], output: str) -> PreflightResult:
        """Called from the launch screen's worker thread."""
        if self.hooks.preflight is not None:
            return self.hooks.preflight(runs, output)
        return default_preflight(runs, output, self.hooks.check_imports)

    def files_info(self) -> list[tuple[str, str]]:
        spec = self.spec
        if self.mode == "replay" and not self.started:
            return [("session", p) for p in spec.paths]
        out: list[tuple[str, str]] = []
        if spec.session_path is not None:
            out.append(("session", str(spec.session_path)))
        if self.export_paths:
            out.append(("reports", ", ".join(str(p) for p in self.export_paths)))
        elif self.export_error:
            out.append(("reports", f"not written: {self.export_error}"))
        elif spec.exports and self.started:
            out.append(("reports", f"{', '.join(spec.exports)} written when the runs end"))
        if self.detached_pid and spec.session_path is not None:
            from sgtui.tui.detach import log_path

            out.append(("log", str(log_path(spec.session_path))))
        return out

    def show_verdict(self) -> None:
        try:
            if not isinstance(self.screen, VerdictScreen):
                self.push_screen(VerdictScreen())
        except ScreenStackError:  # shutting down
            pass

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

    async def action_quit(self) -> None:
        self.action_request_quit()

    def on_unmount(self) -> None:
        self._restore_runtime()
        self._remove_signals()
        self.stop_attached_runs()  # leaving the app never leaves attached runs orphaned (detached: their own process)
        if self.hub is not None:
            self.hub.stop(timeout=0.5)

    def shutdown(self, timeout: float = 60.0) -> None:
        """After the app exited: stop attached runs (never leave orphans), stop the hub."""
        self.stop_attached_runs(timeout)
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
             output_dir: str | Path | None = None, exports: Sequence[str] = DEFAULT_EXPORTS,
             paths: Sequence[str | Path] = (), follow: bool = False, explicit: Iterable[str] | None = None,
             use_last_session: bool = True, **kw: Any) -> SgtuiApp:
    """Build the app as the CLI runs it (see the module docstring). Reads the last session's header
    for the launch form here, before the event loop exists."""
    out = Path(output_dir) if output_dir else (Path(session_path).parent if session_path else Path(SESSIONS_DIR))
    launch_options = kw.pop("launch_options", None)
    note = ""
    if mode == "launch" and launch_options is None:
        runs = list(runs or [])
        pythons = {b: next((r.python for r in runs if r.backend == b), "") for b in BACKENDS}
        ports = {b: next((r.port for r in runs if r.backend == b), p) for b, p in DEFAULT_PORTS.items()}
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
    # COLUMNS/LINES in the environment (a shell's `export COLUMNS`, a test harness) pin the terminal size
    # Textual reads (shutil.get_terminal_size takes them first): the UI then never follows a resize (found by
    # tests/tui/tmux_replay_check.sh, which stayed at 80x24 after resize-window inside the full test run).
    for var in ("COLUMNS", "LINES"):
        os.environ.pop(var, None)
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


def run_live(runs: list[RunConfig], session_path: str | Path, exports: Sequence[str] = DEFAULT_EXPORTS, *,
             launch: bool = True, explicit: Iterable[str] | None = None, output_dir: str | Path | None = None,
             use_last_session: bool = True, detach: bool = False, concurrent: bool = False, **kw: Any) -> int:
    app = make_app("launch" if launch else "live", runs=runs, session_path=session_path, output_dir=output_dir,
                   exports=exports, explicit=explicit, use_last_session=use_last_session, detach=detach,
                   concurrent=concurrent, **kw)
    return _run(app)


def run_replay(paths: Sequence[str | Path], follow: bool = False, *, speed: str = "1x", playing: bool = False,
               **kw: Any) -> int:
    app = make_app("replay", paths=paths, follow=follow, speed=speed, playing=playing, **kw)
    return _run(app)
