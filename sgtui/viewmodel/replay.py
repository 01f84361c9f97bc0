"""The replay clock: which events of recorded sessions are on screen, played on a clock and sought by step.

    clock = ReplayClock(timelines, sinks, restart, speed="max")
    clock.advance(dt)                  # play: dt seconds of wall time at the speed
    clock.seek_step(3, "a:vllm")       # False (nothing moved) when that run has no step 3
    clock.seek_rel(+1); clock.seek_start(); clock.seek_end(); clock.status()

Why a class of its own: the hub thread only drives it (clock ticks, commands); the rules (a playhead on one
axis for every session, sessions aligned on the step sought, the tie-breaks between runs starting together,
refusals) are plain arithmetic over event times, tested without threads. Events go forward only: the clock
hands each session's events to its sink (`sinks[i]`, a fold), and a backward seek asks `restart(i)` for a
fresh sink and replays that session from its start (`epoch` + 1). No Textual, no rich.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import compress
from operator import attrgetter

from sgtui.events import Event, Phase, RunStart
from sgtui.labels import run_labels
from sgtui.viewmodel import commands as C
from sgtui.viewmodel.commands import SPEEDS, check_speed
from sgtui.viewmodel.views import ReplayStatus

_SPEED_FACTOR = {"1x": 1.0, "10x": 10.0}
#: Events applied per `advance` at speed max (spread over the sessions): keeps snapshots flowing at any size.
CHUNK = 20000
_EPS = 1e-6

Sink = Callable[[Event], None]
#: (position on the replay clock, run column key, step, session index, run label)
Point = tuple[float, str, int, int, str]


class ReplayClock:
    """Playhead over `timelines` (one event list per session, file order). See the module docstring."""

    def __init__(self, timelines: Sequence[list[Event]], sinks: Sequence[Sink], restart: Callable[[int], Sink], *,
                 speed: str = "max", playing: bool = True, chunk: int = CHUNK) -> None:
        self.events = [list(ev) for ev in timelines]
        self.sinks = list(sinks)
        self.restart = restart
        self.speed = check_speed(speed)
        self.playing = playing
        self.chunk = chunk
        self.applied = 0  # events handed to the sinks (refolds included)
        self.epoch = 0  # backward seeks so far
        self.elapsed = 0.0  # the playhead: seconds since the aligned start
        n = len(self.events)
        self.cursor = [0] * n
        self.t0 = [ev[0].t if ev else 0.0 for ev in self.events]
        self.t_end = [max(map(_T, ev), default=t0) for ev, t0 in zip(self.events, self.t0)]  # clocks may step back
        self.shift = [0.0] * n
        self.step_t: list[dict[int, float]] = []  # session -> step -> its first phase start (any run)
        self.points: list[list[tuple[float, str, int]]] = []  # session -> [(time, run label, step)], time order
        labels: list[list[str]] = []  # session -> its runs' labels (run_start order): the column keys name all
        for ev in self.events:
            steps, per_run, started = _step_starts(ev)
            self.step_t.append(steps)
            self.points.append(sorted((t, lbl, s) for (lbl, s), t in per_run.items()))
            labels.append(list(dict.fromkeys(started + [lbl for lbl, _ in per_run])))
        #: session -> run label -> column key, named as `views.column_keys` names columns (`sgtui.labels`)
        self.keys = [dict(zip(ls, keys)) for ls, keys in zip(labels, run_labels(labels))]
        self.focus = ""  # the run key last sought: wins ties under the playhead
        self.duration = max((self.t_end[i] - self.t0[i] for i, ev in enumerate(self.events) if ev), default=0.0)
        for i in range(n):
            self._apply_until(i, self.t0[i])  # open at the first event, not on a blank screen

    def do(self, cmd: C.ReplayCommand) -> bool:
        """Carry out one command (`sgtui.viewmodel.commands`); False when it was refused (no such step)."""
        if isinstance(cmd, C.TogglePlay):
            self.set_playing(not self.playing)
        elif isinstance(cmd, (C.Play, C.Pause)):
            self.set_playing(isinstance(cmd, C.Play))
        elif isinstance(cmd, C.SetSpeed):
            self.set_speed(cmd.speed)
        elif isinstance(cmd, C.CycleSpeed):
            self.cycle_speed()
        elif isinstance(cmd, C.SeekStep):
            return self.seek_step(cmd.step, cmd.run or None)
        elif isinstance(cmd, C.SeekRel):
            return self.seek_rel(cmd.delta)
        elif isinstance(cmd, C.SeekStart):
            self.seek_start()
        elif isinstance(cmd, C.SeekEnd):
            self.seek_end()
        else:
            raise TypeError(f"not a replay command: {cmd!r}")
        return True

    # -- playing ------------------------------------------------------------------------------
    def at_end(self) -> bool:
        return all(c >= len(ev) for c, ev in zip(self.cursor, self.events))

    def behind(self) -> bool:
        """Playing at max with events left: the caller should advance again at once."""
        return self.playing and self.speed == "max" and not self.at_end()

    def nows(self) -> list[float]:
        """Each session's own time under the playhead."""
        return [self.t0[i] + self.shift[i] + self.elapsed for i in range(len(self.events))]

    def advance(self, dt: float) -> bool:
        """`dt` wall seconds of playing; True when the screen changes (events, or the playhead at 1x/10x)."""
        if not self.playing:
            return False
        if self.at_end():
            self.playing = False
            return False
        if self.speed == "max":
            # the elapsed time that applies about `chunk` more events, spread over the sessions
            per = max(1, self.chunk // max(1, len(self.events)))
            targets = []
            for i, ev in enumerate(self.events):
                c = self.cursor[i]
                j = c + per - 1
                if j < len(ev):  # never below the next event's time: a file whose clock steps back must not stall
                    targets.append(max(ev[c].t, ev[j].t) - self.t0[i] - self.shift[i])
            self.elapsed = min(targets) if targets else self._end_elapsed()
        else:
            self.elapsed += dt * _SPEED_FACTOR[self.speed]
        applied = sum(self._apply_until(i, t) for i, t in enumerate(self.nows()))
        if self.at_end():
            self.playing = False
            self.elapsed = max(self.elapsed, self._end_elapsed())
            return True
        return applied > 0 or self.speed != "max"

    def set_playing(self, playing: bool) -> None:
        if playing and self.at_end():
            self.seek_start()  # play again from the start
        self.playing = playing

    def set_speed(self, speed: str) -> None:
        self.speed = check_speed(speed)

    def cycle_speed(self) -> None:
        self.speed = SPEEDS[(SPEEDS.index(self.speed) + 1) % len(SPEEDS)]

    # -- where the playhead is ----------------------------------------------------------------
    def aligned(self) -> list[Point]:
        """Every run's step starts on the replay clock, in time order (ties: the run last sought first)."""
        out = []
        for i, pts in enumerate(self.points):
            base = self.t0[i] + self.shift[i]
            out.extend((t - base, self.keys[i][lbl], s, i, lbl) for t, lbl, s in pts)
        out.sort(key=lambda p: (p[0], p[1] != self.focus))
        return out

    def run_steps(self) -> list[tuple[str, tuple[int, ...]]]:
        """(run column key, its steps) of every run with steps: what seek can reach."""
        out = []
        for i, pts in enumerate(self.points):
            per: dict[str, list[int]] = {}
            for _, lbl, s in pts:
                per.setdefault(lbl, []).append(s)
            out.extend((self.keys[i][lbl], tuple(sorted(set(v)))) for lbl, v in per.items())
        return out

    def current(self) -> tuple[str, int]:
        """(run key, step) under the playhead: the latest step start at or before it (ties: the run last
        sought); before any, the first run with steps at step 0."""
        pts = self.aligned()
        if not pts:
            return "", 0
        cur: Point | None = None
        for p in pts:
            if p[0] > self.elapsed + _EPS:
                break
            if cur is None or p[0] > cur[0] + _EPS or p[1] == self.focus:
                cur = p
        if cur is None:
            return pts[0][1], 0
        return cur[1], cur[2]

    def status(self) -> ReplayStatus:
        run, step = self.current()
        run_steps = tuple(self.run_steps())
        keys = [k for k, _ in run_steps]
        return ReplayStatus(self.playing, self.speed, self.elapsed, self.duration, step, self.at_end(), False,
                            run=run, steps=dict(run_steps).get(run, ()), run_steps=run_steps, epoch=self.epoch,
                            run_index=keys.index(run) + 1 if run in keys else 0)

    # -- seeking --------------------------------------------------------------------------------
    def seek_start(self) -> None:
        self.focus = ""
        self.seek_to([self.t0[i] if ev else 0.0 for i, ev in enumerate(self.events)])

    def seek_end(self) -> None:
        self.seek_to([self.t_end[i] if ev else 0.0 for i, ev in enumerate(self.events)])

    def seek_step(self, n: int, key: str | None = None) -> bool:
        """Step n of run `key` (default: the run under the playhead); n <= 0: the start. Sessions that
        have a run of the same name with that step are aligned on it, others on their own step n
        (its first start, any run), others keep their place. False (nothing moved): no such step."""
        if n <= 0:
            self.seek_start()
            return True
        if not key:
            key = self.current()[0]
        where = next(((i, lbl) for i, keys in enumerate(self.keys) for lbl, k in keys.items() if k == key), None)
        if where is None:
            return False
        i, label = where
        t = _step_time(self.points[i], label, n)
        if t is None:
            return False
        pos = t - self.t0[i] - self.shift[i]
        targets = []
        for j, ev in enumerate(self.events):
            if j == i:
                targets.append(t)
            elif not ev:
                targets.append(0.0)
            else:
                same = _step_time(self.points[j], label, n)
                if same is None:
                    same = self.step_t[j].get(n)
                if same is None:
                    same = min(self.t0[j] + self.shift[j] + pos, self.t_end[j])
                targets.append(same)
        self.focus = key
        self.seek_to(targets)
        return True

    def seek_rel(self, delta: int) -> bool:
        """The next (+1) or previous (-1) step start of any run; False when there is none that way."""
        pts = self.aligned()
        if delta > 0:
            nxt = next((p for p in pts if p[0] > self.elapsed + _EPS), None)
            return nxt is not None and self.seek_step(nxt[2], nxt[1])
        key, step = self.current()
        here = next((p[0] for p in pts if p[1] == key and p[2] == step), None)
        if here is None:
            return False
        prev = [p for p in pts if p[0] < here - _EPS]
        if not prev:
            self.seek_start()
            return True
        # the latest earlier start; among equal times, the run last sought
        last = max(p[0] for p in prev)
        tied = [q for q in prev if q[0] >= last - _EPS]
        p = next((q for q in tied if q[1] == self.focus), tied[0])
        return self.seek_step(p[2], p[1])

    def seek_to(self, targets: list[float]) -> None:
        """targets[i]: absolute session time session i should show up to; sessions are aligned there."""
        base = min((targets[i] - self.t0[i] for i in range(len(targets))), default=0.0)
        for i, t_abs in enumerate(targets):
            applied_t = self.events[i][self.cursor[i] - 1].t if self.cursor[i] else float("-inf")
            if t_abs < applied_t:  # the fold only goes forward: refold session i from its start
                self.sinks[i] = self.restart(i)
                self.cursor[i] = 0
                self.epoch += 1
            self._apply_until(i, t_abs)
            self.shift[i] = (t_abs - self.t0[i]) - base
        self.elapsed = base

    # -- internals ------------------------------------------------------------------------------
    def _apply_until(self, i: int, t_abs: float) -> int:
        events, c, sink = self.events[i], self.cursor[i], self.sinks[i]
        n = len(events)
        start = c
        while c < n and events[c].t <= t_abs:
            sink(events[c])
            c += 1
        self.cursor[i] = c
        self.applied += c - start
        return c - start

    def _end_elapsed(self) -> float:
        return max((self.t_end[i] - self.t0[i] - self.shift[i] for i, ev in enumerate(self.events) if ev),
                   default=0.0)


_T = attrgetter("t")
#: The kinds `_step_starts` reads (a 1M-event replay has ~70k of them): True for those, None for the rest.
_MARKS = {RunStart: True, Phase: True}.get


def _step_starts(events: list[Event]) -> tuple[dict[int, float], dict[tuple[str, int], float], list[str]]:
    """(step -> its first phase start, any run; (run, step >= 1) -> that run's first phase start of it;
    the labels of the runs started, in order)."""
    steps: dict[int, float] = {}
    per_run: dict[tuple[str, int], float] = {}
    started: dict[str, None] = {}
    for e in compress(events, map(_MARKS, map(type, events))):  # the few that matter, picked at C speed
        if type(e) is RunStart:
            started[e.run] = None
        elif e.edge == "start":
            s = e.step
            if s not in steps or e.t < steps[s]:
                steps[s] = e.t
            k = (e.run, s)
            if s >= 1 and (k not in per_run or e.t < per_run[k]):
                per_run[k] = e.t
    return steps, per_run, list(started)


def _step_time(points: list[tuple[float, str, int]], label: str, step: int) -> float | None:
    return next((t for t, lbl, s in points if lbl == label and s == step), None)


def first_phase_start(events: list[Event], step: int) -> float | None:
    """Time of the first phase start of an RL step (tests and seek share this definition)."""
    ts = [e.t for e in events if isinstance(e, Phase) and e.edge == "start" and e.step == step]
    return min(ts) if ts else None
