"""sgtui.viewmodel.replay.ReplayClock without threads: playhead, speeds, seek by step across runs, refusals;
and the typed hub commands (sgtui.viewmodel.commands)."""

import pytest

from sgtui.events import Log, Phase, RunStart, SessionHeader
from sgtui.viewmodel import commands as C
from sgtui.viewmodel.hub import Hub
from sgtui.viewmodel.replay import ReplayClock


def run_events(run: str, t0: float, steps: int, step_s: float = 10.0) -> list:
    out = [RunStart(t=t0, run=run)]
    for s in range(1, steps + 1):
        t = t0 + s * step_s
        out += [Phase(t=t, run=run, step=s, name="rollout"), Log(t=t + 1, run=run, line=f"{run} {s}"),
                Phase(t=t + 2, run=run, step=s, name="rollout", edge="end")]
    return out


def session(*runs, t0: float = 1000.0) -> list:
    ev = [SessionHeader(t=t0)]
    for r in runs:
        ev += r
    return sorted(ev, key=lambda e: e.t)


class Folds:
    """Sinks that record what each session was shown; a restart starts a fresh list."""

    def __init__(self, n: int) -> None:
        self.shown: list[list] = [[] for _ in range(n)]
        self.restarts: list[int] = []

    def sinks(self):
        return [lst.append for lst in self.shown]

    def restart(self, i: int):
        self.restarts.append(i)
        self.shown[i] = []
        return self.shown[i].append


def clock_of(*timelines, **kw) -> tuple[ReplayClock, Folds]:
    f = Folds(len(timelines))
    return ReplayClock(list(timelines), f.sinks(), f.restart, **kw), f


def test_opens_at_the_first_event_and_seeks_to_exactly_the_events_before_a_step():
    ev = session(run_events("a", 1000.0, 3))
    c, f = clock_of(ev, playing=False)
    assert f.shown == [[ev[0], ev[1]]] and ev[1].t == ev[0].t  # header and run_start, not a blank screen
    assert c.seek_step(2, "a")
    t2 = 1020.0
    assert f.shown[0] == [e for e in ev if e.t <= t2] and c.elapsed == pytest.approx(t2 - 1000.0)
    assert c.current() == ("a", 2) and c.status().step == 2 and c.status().run_index == 1
    assert c.epoch == 0 and f.restarts == []


def test_a_step_the_run_lacks_is_refused_and_nothing_moves():
    c, f = clock_of(session(run_events("a", 1000.0, 2)), playing=False)
    c.seek_step(1, "a")
    before = (list(f.shown[0]), c.elapsed, c.epoch)
    assert not c.seek_step(7, "a") and not c.seek_step(1, "nosuchrun")
    assert (f.shown[0], c.elapsed, c.epoch) == before
    assert c.status().run_steps == (("a", (1, 2)),)


def test_seeking_back_refolds_from_the_start():
    ev = session(run_events("a", 1000.0, 3))
    c, f = clock_of(ev, playing=False)
    c.seek_end()
    assert f.shown[0] == ev and c.at_end()
    assert c.seek_step(1, "a")
    assert f.restarts == [0] and c.epoch == 1
    assert f.shown[0] == [e for e in ev if e.t <= 1010.0]  # the fresh fold got the events up to step 1 only


def test_seek_rel_walks_every_runs_step_starts_in_time_order():
    # b's steps fall between a's: +1 visits a1 b1 a2 b2, -1 comes back the same way
    ev = session(run_events("a", 1000.0, 2, step_s=10.0), run_events("b", 1005.0, 2, step_s=10.0))
    c, _ = clock_of(ev, playing=False)
    seen = []
    while c.seek_rel(+1):
        seen.append(c.current())
    assert seen == [("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    back = []
    while c.elapsed > 0 and c.seek_rel(-1):
        back.append(c.current())
    assert back == [("a", 2), ("b", 1), ("a", 1), ("a", 0)] and c.elapsed == 0.0  # before a1: the start


def test_two_sessions_align_on_the_same_runs_step():
    s1 = session(run_events("x", 1000.0, 3, step_s=10.0), t0=1000.0)
    s2 = session(run_events("x", 5000.0, 3, step_s=30.0), t0=5000.0)  # another day, slower steps
    c, f = clock_of(s1, s2, playing=False)
    assert [ks for ks in c.keys] == [{"x": "x#1"}, {"x": "x#2"}]  # one label in two sessions: tagged
    assert c.seek_step(2, "x#2")
    assert f.shown == [[e for e in s1 if e.t <= 1020.0], [e for e in s2 if e.t <= 5060.0]]  # both at step 2
    assert c.nows() == [pytest.approx(1020.0), pytest.approx(5060.0)]


def test_play_at_1x_and_10x_moves_the_playhead_by_wall_time_and_stops_at_the_end():
    c, f = clock_of(session(run_events("a", 1000.0, 3)), playing=True, speed="1x")
    assert c.advance(2.0) and c.elapsed == pytest.approx(2.0)
    c.set_speed("10x")
    c.advance(1.5)
    assert c.elapsed == pytest.approx(17.0) and c.current() == ("a", 1)
    assert c.advance(100.0) and not c.playing and c.at_end()
    assert not c.advance(1.0)  # at the end: nothing moves
    c.set_playing(True)  # play again: from the start
    assert c.playing and c.elapsed == 0.0 and c.epoch == 1


def test_max_speed_applies_a_chunk_at_a_time_and_is_behind_until_the_end():
    ev = session(run_events("a", 1000.0, 5))
    c, f = clock_of(ev, playing=True, speed="max", chunk=4)
    n = len(f.shown[0])
    assert c.behind() and c.advance(0.0)
    assert 0 < len(f.shown[0]) - n <= 4
    while c.behind():
        c.advance(0.0)
    assert f.shown[0] == ev and not c.playing and c.applied == len(ev)


def test_commands_are_typed_and_carried_out():
    c, _ = clock_of(session(run_events("a", 1000.0, 3)), playing=False, speed="1x")
    c.do(C.CycleSpeed())
    assert c.speed == "10x"
    c.do(C.SetSpeed("max"))
    c.do(C.TogglePlay())
    assert c.playing and c.speed == "max"
    c.do(C.Pause())
    assert not c.playing
    assert c.do(C.SeekStep(3)) and c.current() == ("a", 3)  # "": the run under the playhead
    assert not c.do(C.SeekStep(9, "a"))
    c.do(C.SeekStart())
    assert c.elapsed == 0.0
    with pytest.raises(ValueError):
        C.SetSpeed("2x")  # refused where it is written, not in the hub thread
    with pytest.raises(TypeError):
        c.do(C.Refresh())  # type: ignore[arg-type]


def test_the_hub_refuses_a_command_that_is_not_one():
    hub = Hub(lambda snap: None, mode="replay", paths=[])
    with pytest.raises(TypeError):
        hub.command("seek_end")  # type: ignore[arg-type]
    hub.command(C.SeekEnd())  # queued for the hub thread (not started here)
