"""The hub and the snapshot views, without a terminal: numbers, lanes, seek, rates."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gen_session import DEFAULT_RUNS, RunSpec, generate, six_runs, write_session
from sgtui.events import Phase, Request
from sgtui.state import SessionState, run_summary, step_summary
from sgtui.viewmodel import commands as C
from sgtui.viewmodel.hub import Hub
from sgtui.viewmodel.replay import first_phase_start
from sgtui.viewmodel.views import Snapshot, TrackedSession, column_keys
from sgtui.tui.widgets.timeline import lane_summary


class Collector:
    """A UI stand-in: keeps snapshots, acks each one like the app does after painting."""

    def __init__(self) -> None:
        self.snaps: list[Snapshot] = []
        self.hub: Hub | None = None
        self.cond = threading.Condition()

    def __call__(self, snap: Snapshot) -> None:
        with self.cond:
            self.snaps.append(snap)
            self.cond.notify_all()
        assert self.hub is not None
        self.hub.ack()

    def wait(self, pred, timeout: float = 10.0) -> Snapshot:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.snaps and pred(self.snaps[-1]):
                    return self.snaps[-1]
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching snapshot; last: {self.snaps[-1] if self.snaps else None}")
                self.cond.wait(left)


@contextmanager
def running_hub(**kw) -> Iterator[tuple[Hub, Collector]]:
    """A started hub feeding a Collector; stopped however the body ends, so a failed test leaves no thread."""
    c = Collector()
    hub = Hub(c, **kw)
    c.hub = hub
    hub.start()
    try:
        yield hub, c
    finally:
        hub.stop()


def done(s: Snapshot) -> bool:
    return s.settled and (s.replay is None or (s.replay.at_end and not s.replay.playing))


def replayed(*paths: Path) -> Snapshot:
    """The last snapshot of these sessions replayed to the end side by side: what every number is checked on."""
    with running_hub(mode="replay", paths=[str(p) for p in paths]) as (_hub, c):
        return c.wait(done)


@pytest.fixture
def session(tmp_path):
    events = generate(seed=3)
    return write_session(tmp_path / "a.jsonl", events), events


def test_replay_numbers_equal_state(session):
    path, events = session
    snap = replayed(path)
    state = SessionState().apply_all(events)
    assert snap.events == len(events)
    assert [r.key for r in snap.runs] == [s.label for s in DEFAULT_RUNS]
    for rv in snap.runs:
        want = run_summary(state.runs[rv.label], state.gpu)
        assert rv.summary is not None
        assert rv.summary.metrics == want.metrics
        assert rv.summary.phase_means == want.phase_means
        assert (rv.done, rv.errors) == (want.metrics.completed, want.metrics.errors)
        last = step_summary(state.runs[rv.label].steps[rv.step])
        assert rv.step_tok_s == pytest.approx(last.metrics.output_throughput)
        assert rv.status == "ok"
    assert snap.verdict is not None and snap.verdict.ranked


def test_lanes_match_phase_events(session):
    path, events = session
    snap = replayed(path)
    for rv in snap.runs:
        want: dict[int, list[tuple[str, float]]] = {}
        starts: dict[tuple[int, str], float] = {}
        for e in events:
            if isinstance(e, Phase) and e.run == rv.label:
                if e.edge == "start":
                    starts[(e.step, e.name)] = e.t
                else:
                    want.setdefault(e.step, []).append((e.name, e.t - starts[(e.step, e.name)]))
        got = lane_summary(rv)
        assert set(got) == set(want)
        for step in want:
            assert [n for n, _ in got[step]] == [n for n, _ in want[step]]
            assert [d for _, d in got[step]] == pytest.approx([d for _, d in want[step]])


def test_seek_by_step_shows_exactly_the_events_before_it(session):
    path, events = session
    with running_hub(mode="replay", paths=[str(path)], playing=False, speed="1x") as (hub, c):
        c.wait(lambda s: s.replay is not None and not s.replay.loading)
        t2 = first_phase_start(events, 2)
        hub.command(C.SeekStep(2))
        snap = c.wait(lambda s: s.replay.step == 2 and s.settled)
        assert snap.events == sum(1 for e in events if e.t <= t2)
        assert snap.replay.position == pytest.approx(t2 - events[0].t)
        # backwards: the fold is rebuilt from the start
        hub.command(C.SeekStep(1))
        snap = c.wait(lambda s: s.replay.step == 1 and s.settled)
        assert snap.events == sum(1 for e in events if e.t <= first_phase_start(events, 1))
        hub.command(C.SeekEnd())
        snap = c.wait(lambda s: s.replay.at_end and s.settled)
        assert snap.events == len(events)


def test_play_pause_and_speed(session):
    path, events = session
    with running_hub(mode="replay", paths=[str(path)], playing=False, speed="10x") as (hub, c):
        c.wait(lambda s: s.replay is not None and not s.replay.loading)
        hub.command(C.Play())
        snap = c.wait(lambda s: s.replay.position > 2.0, timeout=5)
        assert snap.replay.playing and snap.replay.speed == "10x"
        hub.command(C.Pause())
        paused = c.wait(lambda s: not s.replay.playing)
        time.sleep(0.3)
        assert c.snaps[-1].replay.position == pytest.approx(paused.replay.position)
        hub.command(C.CycleSpeed())  # 10x -> max
        hub.command(C.Play())
        snap = c.wait(lambda s: s.replay.at_end, timeout=5)
        assert snap.events == len(events)


def test_sessions_side_by_side_get_unique_columns(tmp_path):
    a = write_session(tmp_path / "a.jsonl", generate(seed=1))
    b = write_session(tmp_path / "b.jsonl", generate(seed=2, runs=(DEFAULT_RUNS[0],)))
    snap = replayed(a, b)
    assert [r.key for r in snap.runs] == ["vllm-sleep1#1", "sglang-release", "vllm-sleep1#2"]
    assert [r.session for r in snap.runs] == [0, 0, 1]
    assert len(snap.gpus) == 2 and snap.gpus[1].title == "b"
    assert set(snap.verdict.ranked) == {"vllm-sleep1#1", "sglang-release", "vllm-sleep1#2"}


def test_no_gpu_is_said_once_and_rest_works(tmp_path):
    path = write_session(tmp_path / "cpu.jsonl", generate(seed=4, gpu=False))
    snap = replayed(path)
    assert snap.gpus[0].error == "no NVIDIA driver" and not snap.gpus[0].devices
    assert all(r.summary is not None and r.summary.metrics.completed for r in snap.runs)


def test_failed_run_carries_its_error(tmp_path):
    runs = (DEFAULT_RUNS[0], RunSpec("sglang-oom", "sglang", "release", fail_step=2))
    path = write_session(tmp_path / "f.jsonl", generate(seed=5, runs=runs))
    snap = replayed(path)
    bad = snap.runs[1]
    assert bad.status == "failed" and bad.errors == 4
    assert [e.category for e in bad.error_events] == ["OOM"]
    assert "sglang-oom" in snap.verdict.unranked


def test_live_push_at_high_rate_snapshots_stay_bounded():
    """Events pushed from another thread as fast as it can: every event folds, snapshots stay <= refresh_hz."""
    events = generate(seed=6, runs=six_runs(), steps=4, rollouts=64)
    with running_hub(mode="live", expected=[s.label for s in six_runs()], refresh_hz=10.0) as (hub, c):
        t0 = time.monotonic()
        for e in events:
            hub.push(e)
        snap = c.wait(lambda s: s.applied == len(events) and s.settled, timeout=20)
    elapsed = time.monotonic() - t0
    assert len(c.snaps) <= elapsed * 10 + 3
    state = SessionState().apply_all(events)
    for rv in snap.runs:
        assert rv.summary.metrics == run_summary(state.runs[rv.label], state.gpu).metrics


def test_expected_runs_show_as_pending_before_their_first_event():
    with running_hub(mode="live", expected=["a", "b"]) as (_hub, c):
        snap = c.wait(lambda s: True)
    assert [(r.key, r.status) for r in snap.runs] == [("a", "pending"), ("b", "pending")]


def test_follow_tails_a_growing_file(tmp_path):
    events = generate(seed=7)
    path = tmp_path / "live.jsonl"
    half = len(events) // 2
    write_session(path, events[:half])
    with running_hub(mode="follow", paths=[str(path)]) as (hub, c):
        c.wait(lambda s: s.events == half)
        with path.open("ab") as f:
            from sgtui.events import encode

            for e in events[half:]:
                f.write(encode(e))
        snap = c.wait(lambda s: s.events == len(events) and s.settled)
    assert all(r.status == "ok" for r in snap.runs)


def test_request_counters_ignore_warmup_and_match_state():
    ts = TrackedSession("x")
    ts.apply(Request(t=1.0, run="r", step=0, output_tokens=5))
    ts.apply(Request(t=2.0, run="r", step=1, output_tokens=7))
    ts.apply(Request(t=3.0, run="r", step=1, error="boom"))
    run = ts.state.runs["r"]  # the fold's own counters: the views keep none
    assert (run.requests_completed, run.requests_failed) == (1, 1)
    assert (run.steps[1].requests_completed, run.steps[1].requests_failed, run.steps[1].output_tokens) == (1, 1, 7)
    assert [k for k, _, _ in column_keys([ts])] == ["r"]
