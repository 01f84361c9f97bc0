"""The timeline's lane cache: a snapshot redraws only the lanes that changed, and draws them as before."""

from __future__ import annotations

from sgtui.tui.widgets.timeline import LaneCache, join_row, run_block
from sgtui.viewmodel.views import RunView, SpanView


def _run(steps: int, running_last: float | None = None) -> RunView:
    spans = []
    t = 0.0
    for s in range(1, steps + 1):
        for name, dur in (("rollout", 2.0), ("offload", 0.5), ("train", 1.0)):
            running = running_last is not None and s == steps and name == "train"
            spans.append(SpanView(s, name, t, running_last if running else dur, running, True, ""))
            t += dur
    return RunView(key="a", label="a", index=0, session=0, spans=tuple(spans))


def _plain(lines) -> list[str]:
    return [t.plain for t in lines]


def test_unchanged_lanes_are_reused_and_changed_ones_redrawn():
    cache = LaneCache()
    cache.start()
    first = run_block(_run(50, running_last=0.2), 60, 0.1, 1.0, cache=cache)
    cache.start()
    second = run_block(_run(50, running_last=0.7), 60, 0.1, 1.0, cache=cache)
    # lines 1..49 are the finished steps' lanes: the same objects; the running step's lane is new
    assert all(a is b for a, b in zip(first[1:50], second[1:50]))
    assert first[50] is not second[50]
    assert _plain(second) == _plain(run_block(_run(50, running_last=0.7), 60, 0.1, 1.0))
    assert second[50].plain != first[50].plain


def test_a_new_scale_redraws_every_lane():
    cache = LaneCache()
    cache.start()
    first = run_block(_run(5), 60, 0.1, 1.0, cache=cache)
    cache.start()
    second = run_block(_run(5), 60, 0.2, 1.0, cache=cache)
    assert not any(a is b for a, b in zip(first[1:], second[1:]))
    assert _plain(second) == _plain(run_block(_run(5), 60, 0.2, 1.0))


def test_rows_join_cells_as_before_and_old_entries_are_dropped():
    cache = LaneCache()
    cache.start()
    a = run_block(_run(3), 40, 0.1, 1.0, cache=cache)
    b = run_block(_run(4), 40, 0.1, 1.0, cache=cache)
    row = cache.row([a[1], b[1]], 40)
    assert row.plain == join_row([a[1], b[1]], 40).plain
    assert cache.row([a[1], b[1]], 40) is row
    cache.start()
    cache.start()  # two builds without that row: gone
    assert cache.row([a[1], b[1]], 40) is not row
