"""Snapshot tests (pytest-textual-snapshot) of the dashboard, the verdict and replay, at 80x24 and 200x50.

Data are seeded generated sessions; the live dashboard runs on a frozen clock
(its running phases have fixed durations) and is fed by a scripted
orchestrator; replays show session time only. Update after an intended
change with `pytest tests/tui/test_tui_snapshots.py --snapshot-update` and
look at the report before committing the new SVGs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gen_session import RunSpec, DEFAULT_RUNS, generate, six_runs, write_session
from sgtui.config import RunConfig
from sgtui.tui.app import make_app
from sgtui.tui.screens.verdict import VerdictScreen
from tui_helpers import scripted, settled, wait_for

SIZES = [(80, 24), (200, 50)]


def _session(name: str, **kw) -> tuple[Path, int]:
    events = generate(**kw)
    path = write_session(Path("sessions") / name, events)
    return path, len(events)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_replay_dashboard(snap_compare, in_tmp, size):
    path, n = _session("replay.jsonl", seed=21)
    app = make_app("replay", paths=[path], speed="max", playing=True)

    async def run_before(pilot):
        await wait_for(pilot, lambda: settled(app, n))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_replay_paused_mid_run_two_sessions(snap_compare, in_tmp, size):
    a, _ = _session("a.jsonl", seed=22)
    b, _ = _session("b.jsonl", seed=23, runs=(RunSpec("sglang-oom", "sglang", "release", fail_step=2),), gpu=False)
    app = make_app("replay", paths=[a, b], playing=False, speed="1x")

    async def run_before(pilot):
        await wait_for(pilot, lambda: app.snapshot is not None and not app.snapshot.replay.loading)
        await pilot.press("g")
        await pilot.press("2", "enter")
        await wait_for(pilot, lambda: app.snapshot.replay.step == 2 and app.snapshot.settled)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_replay_two_sessions_side_by_side(snap_compare, in_tmp, size):
    """Two dated sessions of the same runs, at their end: the columns read `vllm-sleep1#1`..., as the report
    names them, a legend says which file `#1` and `#2` are, and the GPU markers are explained."""
    a, n = _session("2024-05-01-vllm-sleep1.jsonl", seed=27)
    b, m = _session("2024-05-02-vllm-sleep1.jsonl", seed=28)
    app = make_app("replay", paths=[a, b], speed="max", playing=True)

    async def run_before(pilot):
        await wait_for(pilot, lambda: settled(app, n + m))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_verdict(snap_compare, in_tmp, size):
    path, n = _session("verdict.jsonl", seed=24, runs=DEFAULT_RUNS + (RunSpec("vllm-oom", "vllm", "sleep2",
                                                                              fail_step=2),))
    app = make_app("replay", paths=[path], speed="max", playing=True)

    async def run_before(pilot):
        await wait_for(pilot, lambda: settled(app, n))
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live_dashboard_mid_run(snap_compare, in_tmp, size):
    """The second run in its step-2 train phase: frozen clock, scripted orchestrator, no process."""
    events = generate(seed=25)
    second = [e for e in events if getattr(e, "run", "") == "sglang-release" and e.kind == "phase"
              and e.name == "train" and e.step == 2 and e.edge == "start"][0]
    cut = second.t + 0.7
    shown = [e for e in events if e.t <= cut]
    runs = [RunConfig(label=s.label, backend=s.backend, strategy=s.strategy, num_steps=3) for s in DEFAULT_RUNS]
    app = make_app("live", runs=runs, session_path="sessions/live.jsonl", clock=lambda: cut,
                   orchestrator_factory=scripted(shown))

    async def run_before(pilot):
        await wait_for(pilot, lambda: settled(app, len(shown)))

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_replay_six_runs(snap_compare, in_tmp, size):
    path, n = _session("six.jsonl", seed=26, runs=six_runs(), steps=2)
    app = make_app("replay", paths=[path], speed="max", playing=True)

    async def run_before(pilot):
        await wait_for(pilot, lambda: settled(app, n))

    assert snap_compare(app, terminal_size=size, run_before=run_before)
