"""What an `SgtuiApp` is built from, in three small groups instead of 25 keyword arguments.

Contract: `AppConfig.build(mode, **options)` takes the flat keywords `make_app` documents (the CLI's
and the tests' spelling) and sorts them into `SessionSpec` (what to run or show), `Playback` (how a
replay starts and how often the screen refreshes) and `Hooks` (stand-ins for tests and benchmarks);
an unknown keyword is a TypeError naming it, as a misspelt argument would be.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sgtui.config import DEFAULT_EXPORTS, SESSIONS_DIR, RunConfig
from sgtui.options import ReportOptions
from sgtui.viewmodel.launch_model import LaunchOptions
from sgtui.viewmodel.preflight_view import PreflightResult
from sgtui.viewmodel.views import Snapshot

MODES = ("launch", "live", "replay")


@dataclass
class SessionSpec:
    """What to run (launch, live) or show (replay, follow), and where its files go."""

    runs: list[RunConfig] = field(default_factory=list)
    session_path: Path | None = None
    output_dir: Path | None = None  # None: the session's directory, else ./sessions
    exports: list[str] = field(default_factory=lambda: list(DEFAULT_EXPORTS))
    paths: list[str] = field(default_factory=list)  # replay: the session files
    follow: bool = False  # replay: tail files still being written
    launch_options: LaunchOptions | None = None  # launch: the form's prefill
    launch_note: str = ""  # launch: where the prefill came from
    detach: bool = False  # the orchestrator in a process of its own
    concurrent: bool = False
    report_options: ReportOptions = field(default_factory=ReportOptions)  # for the reports written at the end

    def __post_init__(self) -> None:
        self.runs = list(self.runs or [])
        self.session_path = Path(self.session_path) if self.session_path else None
        if self.output_dir:
            self.output_dir = Path(self.output_dir)
        else:
            self.output_dir = self.session_path.parent if self.session_path else Path(SESSIONS_DIR)
        self.exports = list(self.exports)
        self.paths = [str(p) for p in self.paths]
        self.report_options = self.report_options or ReportOptions()


@dataclass
class Playback:
    """How a replay opens (first event, paused, 1x unless told) and the snapshot rate cap."""

    speed: str = "1x"
    playing: bool = False
    refresh_hz: float | None = None  # None: hub.LIVE_HZ for live and follow, hub.REPLAY_HZ for replay


@dataclass
class Hooks:
    """Stand-ins for tests and benchmarks; the CLI leaves them all at their defaults."""

    clock: Callable[[], float] = time.time  # the session clock (durations)
    runner_argv: Callable[[RunConfig], list[str]] | None = None  # a stand-in runner's command line
    runner_prefix: list[str] | None = None  # ... as a prefix to `--config JSON`
    preflight: Callable[[list[RunConfig], str], PreflightResult] | None = None
    check_imports: bool = True  # the default preflight imports the engines in their venvs
    orchestrator_factory: Callable[..., Any] | None = None  # an Orchestrator stand-in
    orchestrator_kwargs: dict[str, Any] = field(default_factory=dict)
    auto_verdict: bool = True  # show the verdict when the runs end
    on_painted: Callable[[Snapshot], None] | None = None  # each snapshot once it is on screen

    def __post_init__(self) -> None:
        self.clock = self.clock or time.time
        self.orchestrator_kwargs = dict(self.orchestrator_kwargs or {})
        self.runner_prefix = list(self.runner_prefix) if self.runner_prefix else None
        if self.runner_argv is None and self.runner_prefix:
            prefix = self.runner_prefix
            self.runner_argv = lambda c: prefix + ["--config", c.to_json()]


_GROUPS = (SessionSpec, Playback, Hooks)


@dataclass
class AppConfig:
    mode: str = "launch"
    session: SessionSpec = field(default_factory=SessionSpec)
    playback: Playback = field(default_factory=Playback)
    hooks: Hooks = field(default_factory=Hooks)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")

    @classmethod
    def build(cls, mode: str = "launch", **options: Any) -> "AppConfig":
        """The flat keywords of `make_app`, each into its group."""
        groups: list[dict[str, Any]] = [{} for _ in _GROUPS]
        names = [{f.name for f in dataclasses.fields(g)} for g in _GROUPS]
        for key, value in options.items():
            i = next((i for i, n in enumerate(names) if key in n), None)
            if i is None:
                raise TypeError(f"SgtuiApp got an unexpected keyword argument {key!r}")
            if value is not None:  # None: the group's default
                groups[i][key] = value
        return cls(mode, *(g(**kw) for g, kw in zip(_GROUPS, groups)))
