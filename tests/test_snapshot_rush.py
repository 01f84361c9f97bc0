"""A replay at speed max: no summaries round while it rushes, finished steps reduced meanwhile, and the
numbers settle as soon as the file is played out (benchmarks/replay_load.py measures the time)."""

from __future__ import annotations

import time

from sgtui.state import SessionState, reduce_steps, run_summary
from sgtui.viewmodel.snapshot import SnapshotBuilder, _unreduced_steps
from sgtui.viewmodel.views import ReplayStatus, TrackedSession
from tests.gen import generate


def rushing(at_end: bool = False, speed: str = "max") -> ReplayStatus:
    return ReplayStatus(playing=not at_end, speed=speed, position=0.0, duration=1.0, step=0, at_end=at_end)


def folded(steps: int = 4) -> tuple[TrackedSession, list]:
    evs = generate(steps=steps, requests=20, itl_len=64, seed=5)
    ts = TrackedSession("a.jsonl")
    for e in evs:
        ts.apply(e)
    return ts, evs


def settle(b: SnapshotBuilder, replay: ReplayStatus, timeout: float = 10.0):
    """Build (not quiet, as the hub does in a burst) until the snapshot is settled."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        snap = b.build([0.0], quiet=False, silent=False, replay=replay)
        if snap.settled:
            return snap
        b._worker.wait(5.0)
    raise AssertionError("never settled")


def test_no_summaries_round_while_a_replay_rushes_and_finished_steps_get_reduced():
    ts, _ = folded()
    b = SnapshotBuilder([ts], "replay")
    snap = b.build([0.0], quiet=True, silent=True, replay=rushing())  # silent would start a round at once
    b._worker.wait(5.0)
    snap = b.build([0.0], quiet=True, silent=True, replay=rushing())
    assert not snap.settled and all(r.summary is None for r in snap.runs)
    for run in ts.state.runs.values():
        steps = run.rl_steps
        assert all("requests" in run.steps[n]._cache for n in steps[:-1])  # reduced beside the fold
        assert "requests" not in run.steps[steps[-1]]._cache  # the last step may still grow


def test_warm_batches_go_on_from_where_the_last_one_ended():
    """The warm worker's search resumes at each run's cursor: steps handed out are not looked at again, the
    last step waits until another comes after it, and a cursor of another run object is not used."""
    evs = generate(labels=("vllm-sleep1",), steps=6, requests=4, itl_len=8, seed=2)
    cut = next(i for i, e in enumerate(evs) if getattr(e, "step", 0) == 6)
    ts = TrackedSession("a.jsonl")
    for e in evs[:cut]:
        ts.apply(e)
    run = ts.state.runs["vllm-sleep1"]
    cursors: dict = {}
    first = _unreduced_steps([ts], 2, cursors)
    assert [s.step for s in first] == [1, 2]
    assert [s.step for s in _unreduced_steps([ts], 2, dict(cursors))] == [3, 4]  # a look that moves nothing
    reduce_steps(first)
    assert [s.step for s in _unreduced_steps([ts], 9, cursors)] == [3, 4]  # not 1 and 2 again, not 5 (last)
    assert _unreduced_steps([ts], 9, cursors) == []
    for e in evs[cut:]:
        ts.apply(e)
    assert [s.step for s in _unreduced_steps([ts], 9, cursors)] == [5]  # no longer the last
    fresh = {id(run): (TrackedSession("b").state, 5)}  # same id, another object: from the start
    assert [s.step for s in _unreduced_steps([ts], 9, fresh)] == [3, 4, 5]


def test_played_out_replay_settles_without_waiting_for_a_quiet_stream():
    ts, evs = folded()
    b = SnapshotBuilder([ts], "replay")
    snap = settle(b, rushing(at_end=True))
    want = SessionState("x").apply_all(evs)
    for r in snap.runs:
        assert r.summary is not None
        assert r.summary.metrics == run_summary(want.runs[r.label], want.gpu).metrics


def test_a_replay_at_1x_still_gets_its_rounds():
    ts, _ = folded()
    b = SnapshotBuilder([ts], "replay")
    b.build([0.0], quiet=True, silent=True, replay=rushing(speed="1x"))
    b._worker.wait(5.0)
    snap = b.build([0.0], quiet=True, silent=True, replay=rushing(speed="1x"))
    assert all(r.summary is not None for r in snap.runs)


def test_in_parallel_keeps_order_uses_threads_and_raises():
    import threading

    from sgtui.viewmodel.heavy import in_parallel

    seen: set[str] = set()

    def work(x: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.01)  # the other thread gets its items meanwhile
        return x * x

    assert in_parallel(work, list(range(7)), threads=2) == [x * x for x in range(7)]
    assert len(seen) == 2

    def bad(x: int) -> int:
        if x == 3:
            raise ValueError("torn")
        return x

    try:
        in_parallel(bad, list(range(6)), threads=2)
    except ValueError as e:
        assert str(e) == "torn"
    else:
        raise AssertionError("the helper thread's exception was lost")


def test_a_round_over_two_runs_in_parallel_gives_each_its_own_summary():
    ts, evs = folded(steps=3)
    b = SnapshotBuilder([ts], "replay")
    snap = settle(b, rushing(at_end=True))
    want = SessionState("x").apply_all(evs)
    assert len(snap.runs) == 2
    for r in snap.runs:
        expected = run_summary(want.runs[r.label], want.gpu)
        assert r.summary.label == r.key and r.summary.metrics == expected.metrics
        assert r.summary.steps == expected.steps


def test_a_replay_adopts_the_tail_steps_its_reads_helper_reduced(tmp_path, monkeypatch):
    """A file read in two parts: the warm batches give the tail's steps the helper's reductions instead of
    reducing them here, and the settled numbers are those of a plain fold."""
    from sgtui import session_split
    from sgtui.events import encode
    from sgtui.session import read_session
    from sgtui.state import steps as steps_mod

    evs = generate(steps=10, requests=20, itl_len=64, seed=7)
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(encode(e) for e in evs))
    monkeypatch.setattr(session_split, "SPLIT_MIN", 0)
    monkeypatch.delenv(session_split.ENV, raising=False)
    res = read_session(path, reduce_tail=True)
    assert res.tail is not None
    assert res.tail._wrote(b"s", 60)  # the helper's reductions are there before the first warm batch: no race
    reduced_here = []
    real = steps_mod._reduce
    monkeypatch.setattr(steps_mod, "_reduce", lambda batch: reduced_here.extend(st for st, _ in batch) or real(batch))
    ts = TrackedSession(str(path))
    ts.keep_tail(res)
    for e in res.events:
        ts.apply(e)
    b = SnapshotBuilder([ts], "replay")
    b.build([0.0], quiet=True, silent=True, replay=rushing())
    b._worker.wait(10.0)
    finished = [run.steps[n] for run in ts.state.runs.values() for n in run.rl_steps[:-1]]
    assert all("requests" in st._cache for st in finished)
    tail_requests = {id(e) for e in res.events[res.tail_start:]}
    here = {id(st) for st in reduced_here}
    adopted = [st for st in finished if id(st) not in here]
    assert len(adopted) >= 5 and all(id(st.requests[0]) in tail_requests for st in adopted)
    assert ts._read is None and res.tail.proc.poll() is not None  # all handed over: the helper is done
    snap = settle(b, rushing(at_end=True))
    want = SessionState("x").apply_all(evs)
    for r in snap.runs:
        assert r.summary.metrics == run_summary(want.runs[r.label], want.gpu).metrics
