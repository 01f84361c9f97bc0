"""Helpers shared by the UI tests: screen text, waiting on app state, scripted orchestrators."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Callable

from sgtui.config import RunConfig
from sgtui.events import Event
from sgtui.runner.procs import free_port
from sgtui.runner.procs import group_alive  # noqa: F401 - re-exported for the tests

HERE = Path(__file__).resolve().parent
FAKE_RUNNER = [sys.executable, str(HERE / "fake_runner.py")]


def screen_text(app) -> str:
    """What the terminal shows now, as plain text (one line per row)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_for(pilot, cond: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll `cond` between UI pauses. The limit is generous (the suite runs on two workers beside real engines);
    a passing test never waits for it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or cond}")


def settled(app, events: int | None = None) -> bool:
    s = app.snapshot
    if s is None or not s.settled:
        return False
    if events is not None and s.applied < events:
        return False
    if s.replay is not None and (s.replay.loading or s.replay.playing):
        return False
    return True


def make_model(root: Path) -> Path:
    model = root / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text("{}")
    return model


def fake_runs(root: Path, n: int = 2, steps: int = 2, rollouts: int = 4, env: dict | None = None,
              ports: tuple[int, int] | None = None) -> list[RunConfig]:
    """Runs of the fake runner, on ports of their own: a test whose runs are still stopping must not hold
    (or port-lock) the ports the next test starts on."""
    model = make_model(root)
    ports = ports or (free_port(), free_port())
    specs = [("vllm-sleep1", "vllm", "sleep1", ports[0]), ("sglang-release", "sglang", "release", ports[1])][:n]
    return [RunConfig(label=lbl, backend=b, strategy=s, python=sys.executable, model=str(model), num_steps=steps,
                      num_rollouts=rollouts, concurrency=2, port=p, env=dict(env or {})) for lbl, b, s, p in specs]


class ScriptedOrchestrator:
    """Stands in for `sgtui.orchestrator.Orchestrator` in snapshot tests: publishes a fixed list of
    events to the subscribers, then waits for cancel. No process, no file: a frozen moment of a run."""

    def __init__(self, runs, session_path, *, subscribers, events: list[Event], finish: bool = False, **_):
        self.subscribers = subscribers
        self.events = events
        self.finish = finish
        self.fatal = ""
        self._cancel = threading.Event()

    def run_sync(self) -> dict[str, str]:
        for e in self.events:
            for sub in self.subscribers:
                sub(e)
        if not self.finish:
            self._cancel.wait()
        return {}

    def cancel(self) -> None:
        self._cancel.set()


def scripted(events: list[Event], finish: bool = False):
    return lambda runs, path, **kw: ScriptedOrchestrator(runs, path, events=events, finish=finish, **kw)
