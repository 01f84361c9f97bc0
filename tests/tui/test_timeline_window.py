"""The timeline holds a window of each run's most recent RL steps: a snapshot of a long session costs
O(window), not O(steps), and the timeline says how many earlier steps it leaves out."""

from __future__ import annotations

from sgtui.events import Phase, RunStart
from sgtui.state import load_state
from sgtui.tui.widgets.timeline import Timeline, block_height, lane_summary, lanes_of, run_block, scales
from sgtui.viewmodel.views import TIMELINE_STEPS, RunView, TrackedSession, _span_view, build_run_view
from tests.gen import generate

STEPS = 200
LABELS = ("vllm-sleep1", "sglang-release")


def _tracked(events) -> TrackedSession:
    ts = TrackedSession("gen.jsonl")
    ts.state = load_state(events, "gen.jsonl")
    return ts


def _views(ts: TrackedSession, now: float) -> tuple[RunView, ...]:
    return tuple(build_run_view(lbl, i, ts, lbl, now, None) for i, lbl in enumerate(LABELS))


def _want(ts: TrackedSession, label: str, now: float) -> tuple:
    """What the full timeline gives, kept to step 0 and the last TIMELINE_STEPS RL steps (start order)."""
    run = ts.state.runs[label]
    last = set(run.rl_steps[-TIMELINE_STEPS:])
    base = run.first_t or 0.0
    return tuple(_span_view(sp, base, now) for sp in run.timeline if sp.step == 0 or sp.step in last)


class _NoFullWalk(list):
    """A timeline that may be indexed and sliced but not iterated whole (the O(steps) walk)."""

    def __iter__(self):
        raise AssertionError("the whole timeline was walked")


def test_run_view_holds_step_zero_and_the_last_window_of_steps():
    events = generate(steps=STEPS, requests=2, itl_len=4)
    ts = _tracked(events)
    now = events[-1].t
    for rv in _views(ts, now):
        steps = {sp.step for sp in rv.spans}
        assert steps == {0} | set(range(STEPS - TIMELINE_STEPS + 1, STEPS + 1))
        assert rv.hidden_steps == STEPS - TIMELINE_STEPS == 140
        assert {sp.name for sp in rv.spans if sp.step == 0} == {"startup", "shutdown"}
        assert rv.spans == _want(ts, rv.label, now)  # the same spans, in the same (start) order
        assert rv.step == STEPS  # the rest of the view is as before


def test_the_window_is_read_from_the_end_of_the_timeline():
    events = generate(steps=STEPS, requests=2, itl_len=4)
    ts = _tracked(events)
    now = events[-1].t
    want = {lbl: _want(ts, lbl, now) for lbl in LABELS}
    for run in ts.state.runs.values():
        run.timeline = _NoFullWalk(run.timeline)
    for rv in _views(ts, now):
        assert rv.spans == want[rv.label]


def test_mid_step_the_window_follows_the_running_phase():
    events = generate(steps=STEPS, requests=2, itl_len=4)
    ts = TrackedSession("gen.jsonl")
    checked = 0
    for k, e in enumerate(events):
        ts.apply(e)
        # at a few phase edges spread over the session, among them ones with a phase running
        if isinstance(e, Phase) and k % 997 == 0:
            for rv in _views(ts, e.t):
                if rv.label not in ts.state.runs:
                    continue
                run = ts.state.runs[rv.label]
                assert rv.spans == _want(ts, rv.label, e.t)
                assert rv.hidden_steps == max(0, len(run.rl_steps) - TIMELINE_STEPS)
                checked += 1
    assert checked >= 5


def test_a_short_run_keeps_every_span():
    events = generate(steps=5, requests=2, itl_len=4)
    ts = _tracked(events)
    now = events[-1].t
    for rv in _views(ts, now):
        assert rv.hidden_steps == 0
        run = ts.state.runs[rv.label]
        assert rv.spans == tuple(_span_view(sp, run.first_t or 0.0, now) for sp in run.timeline)


def _timeline(max_lanes: int | None = None) -> tuple[Timeline, tuple[RunView, ...]]:
    events = generate(steps=STEPS, requests=2, itl_len=4)
    runs = _views(_tracked(events), events[-1].t)
    tl = Timeline()
    tl.runs = runs
    tl.max_lanes = max_lanes
    return tl, runs


def test_the_timeline_says_how_many_earlier_steps_it_leaves_out():
    tl, runs = _timeline()
    width = 60  # one column: the blocks one under the other
    lines = [t.plain for t in tl.build_lines(width)]
    said = [ln for ln in lines if "earlier steps" in ln]
    assert len(said) == len(runs)
    assert all(ln.startswith("  … 140 earlier steps") for ln in said)
    assert len(lines) <= 1 + len(runs) * (TIMELINE_STEPS + 5)
    assert sum(ln.lstrip().startswith(f"s{STEPS - TIMELINE_STEPS + 1} ") for ln in lines) == len(runs)
    assert not any(ln.lstrip().startswith(f"s{STEPS - TIMELINE_STEPS} ") for ln in lines)
    assert all(len(ln) <= width - 2 and ln.endswith("…") for ln in said)  # cut to the block, never wrapped


def test_block_height_counts_the_line_and_a_narrow_block_cuts_it():
    _, runs = _timeline()
    for width in (24, 40, 48, 120):
        step_scale, setup_scale = scales(runs, width)
        for rv in runs:
            block = run_block(rv, width, step_scale, setup_scale)
            assert len(block) == block_height(rv) == 1 + 1 + len(lanes_of(rv))
            assert "earlier step" in block[1].plain and block[1].cell_len <= width


def test_max_lanes_and_the_window_give_one_line_with_the_total():
    tl, runs = _timeline(max_lanes=10)
    step_scale, setup_scale = scales(runs, 40)
    for rv in runs:
        block = run_block(rv, 100, step_scale, setup_scale, max_lanes=10)
        total = rv.hidden_steps + len(lanes_of(rv)) - 10
        assert [ln.plain for ln in block].count(f"  … {total} earlier steps (replay: g N seeks to one; sgtui "
                                                "report lists all)") == 1
        assert sum("earlier step" in ln.plain for ln in block) == 1
        assert len(block) == block_height(rv, 10) == 1 + 1 + 10
    lines = [t.plain for t in tl.build_lines(60)]
    assert len(lines) == 1 + 2 * (1 + 1 + 10)


def test_a_short_session_has_no_such_line():
    events = generate(steps=5, requests=2, itl_len=4)
    runs = _views(_tracked(events), events[-1].t)
    tl = Timeline()
    tl.runs = runs
    lines = [t.plain for t in tl.build_lines(60)]
    assert not any("earlier step" in ln for ln in lines)


def test_interleaved_turn_edges_at_step_zero_keep_the_window_in_start_order():
    """--interleave parks and unparks the engine at step 0 around every step: the window still holds the setup,
    its steps with their turn edges, and the shutdown, in start order (the lanes never draw park/unpark)."""
    ev: list = [RunStart(t=0.0, run="a", backend="vllm", strategy="sleep1")]
    t = 1.0

    def phase(step: int, name: str, dur: float) -> None:
        nonlocal t
        ev.append(Phase(t=t, run="a", step=step, name=name, edge="start"))
        t += dur
        ev.append(Phase(t=t, run="a", step=step, name=name, edge="end"))

    phase(0, "startup", 5.0)
    for s in range(1, STEPS + 1):
        phase(0, "unpark", 0.01)
        phase(s, "rollout", 1.0)
        phase(s, "train", 1.0)
        phase(0, "park", 0.01)
    phase(0, "shutdown", 1.0)
    ts = _tracked(ev)
    run = ts.state.runs["a"]
    rv = build_run_view("a", 0, ts, "a", t, None)
    full = [_span_view(sp, run.first_t or 0.0, t) for sp in run.timeline]
    got = list(rv.spans)
    assert got == [sp for sp in full if sp in got]  # a subsequence of the timeline: start order
    first = STEPS - TIMELINE_STEPS + 1
    assert [sp for sp in got if sp.step] == [sp for sp in full if sp.step >= first]
    assert rv.hidden_steps == STEPS - TIMELINE_STEPS
    assert got[0].name == "startup" and got[-1].name == "shutdown"
    assert {s: [n for n, _ in v] for s, v in lane_summary(rv).items()} == \
        {0: ["startup", "shutdown"], **{s: ["rollout", "train"] for s in range(first, STEPS + 1)}}
