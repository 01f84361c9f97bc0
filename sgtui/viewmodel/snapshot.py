"""Snapshots of the tracked sessions at a bounded cost: `SnapshotBuilder`, its background worker and its pace.

Two costs, two paths:
- cheap values (status, phase timeline, request counts, this step's tok/s, engine gauges, logs) are
  rebuilt for every snapshot by the builders of `sgtui.viewmodel.views`, from the fold's running counters
  and the run's timeline, and cached per run version;
- `run_summary` (percentiles over every request of the run) and the verdict are O(all requests): they
  are recomputed only when a run changed, in a background thread (`sgtui.viewmodel.heavy.HeavyWorker`) on frozen copies
  (`sgtui.state.freeze_run`), and no more often than `heavy_factor` times their own cost, so a huge
  session slows the percentiles' refresh instead of the whole UI. When the stream is quiet they are
  always brought up to date, so the final numbers are exact.
A replay at speed max runs no round while it rushes through its file (nobody reads numbers moving that
fast; each round would take the fold's CPU): the worker only reduces the finished steps meanwhile
(`HeavyWorker.warm`), and one round at the end, when the file is played out, pools them.
Nothing in this module imports Textual.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from sgtui.gcpause import gc_paused
from sgtui.options import ReportOptions
from sgtui.state import GpuState, RunState, RunSummary, SessionState, StepState, freeze_gpu, freeze_run
from sgtui.verdict import Verdict, verdict
from sgtui.viewmodel.heavy import HEAVY_QUIET_ONLY_S, HeavyWorker, heavy_interval, quiet_interval
from sgtui.viewmodel.views import (
    GpuView,
    ReplayStatus,
    RunView,
    Snapshot,
    TrackedSession,
    build_gpu_view,
    build_run_view,
    column_keys,
)

#: Minimum seconds between two recomputations of the GPU sparklines (samples come at ~5 Hz).
GPU_MIN_INTERVAL = 0.2


class SnapshotBuilder:
    """Builds `Snapshot`s from tracked sessions; caches what did not change; throttles the O(N) parts."""

    def __init__(self, sessions: list[TrackedSession], mode: str, *, expected: list[str] | None = None,
                 expected_steps: dict[str, int] | None = None, heavy_factor: float = 5.0,
                 mono: Callable[[], float] = time.monotonic, on_done: Callable[[], None] = lambda: None,
                 options: ReportOptions = ReportOptions(),
                 owner_gone: Callable[[SessionState], bool] | None = None) -> None:
        self.sessions = sessions
        self.options = options  # the same verdict as `sgtui report` with the same flags
        self.mode = mode
        self.expected = list(expected or [])
        self.expected_steps = dict(expected_steps or {})
        self.heavy_factor = heavy_factor
        self.mono = mono
        self.seq = 0
        self.finished = False  # the orchestrator is done: expected runs without events were skipped
        self.dead: dict[int, str] = {}  # session index -> why it is dead (follow mode: its sgtui is gone)
        self.owner_gone = owner_gone  # replay: is this session's sgtui gone (its unfinished runs are dead)?
        self._owners: dict[int, tuple[float, str]] = {}  # session index -> (checked at, why dead or '')
        self._ended: dict[int, tuple[GpuView, GpuView]] = {}  # session index -> (GPU view, its ended form)
        self._summaries: dict[str, tuple[tuple, RunSummary]] = {}
        self._verdict: Verdict | None = None
        self._verdict_key: tuple = ()
        self._next_heavy = 0.0
        self._next_quiet = 0.0
        self._heavy_at = mono()
        self._verdict_stale = False
        self.heavy_behind = False
        self.settled = False
        self._last_cost = 0.0
        self._generation = 0
        self._worker = HeavyWorker(on_done, options.include_first_step)
        self._gpu: dict[int, tuple[tuple, GpuView]] = {}
        self._next_gpu = 0.0
        self._run_views: dict[str, tuple[tuple, RunView]] = {}
        self._warmed: dict[int, tuple[RunState, int]] = {}  # `_unreduced_steps`' cursors

    @property
    def busy(self) -> bool:
        """A summaries round is running in the background."""
        return self._worker.busy

    def reset(self) -> None:
        """Forget caches (after a seek rebuilt the states); a round in flight is ignored when it lands."""
        self._generation += 1
        self._summaries.clear()
        self._gpu.clear()
        self._run_views.clear()
        self._warmed = {}  # the worker may still hold the old one: it only ever sees the states it was given
        self._verdict, self._verdict_key = None, ()
        self._next_heavy = self._next_quiet = self._next_gpu = 0.0

    def _heavy(self, cols: list[tuple[str, TrackedSession, str]], quiet: bool, silent: bool,
               rushing: bool = False) -> None:
        """Bring run summaries and the verdict up to date, always in the background worker on frozen
        copies: the hub keeps folding and snapshotting meanwhile. While events stream, rounds are
        spaced by their cost (`heavy_interval`); a round slower than HEAVY_QUIET_ONLY_S waits for a
        quiet stream; a quiet stream spaces them by `quiet_interval`; a silent one (no event for a
        moment: a burst ended) gets its round at once. `self.settled` says the numbers are up to date.
        While a replay rushes through its file (speed max), no round runs: percentiles of a session moving
        faster than anyone reads would be stale when shown, and each round would take the fold's time;
        the one round at the end computes them once (benchmarks/replay_load.py)."""
        done = self._worker.take()
        if done is not None and done[2] == self._generation:
            results, cost, _ = done
            for key, k, s in results:
                self._summaries[key] = (k, s)
            self._verdict_stale = True
            self._last_cost = cost
            self._heavy_at = self.mono()
            self._next_heavy = self._heavy_at + heavy_interval(cost, self.heavy_factor)
            self._next_quiet = self._heavy_at + quiet_interval(cost, self.heavy_factor)
        stale = []
        for key, ts, label in cols:
            run = ts.state.runs.get(label)
            if run is None:
                continue
            k = (id(run), run.version, ts.state.gpu.samples)
            cached = self._summaries.get(key)
            if cached is None or cached[0] != k:
                stale.append((key, ts, run, k))
        now = self.mono()
        if rushing:
            due = False
            sessions = list(self.sessions)
            if not self._worker.busy and _unreduced_steps(sessions, 1, dict(self._warmed)):
                warmed = self._warmed
                self._worker.warm(lambda: _adopted(sessions) or _unreduced_steps(sessions, WARM_STEPS, warmed))
        elif silent:
            due = True
        elif quiet:
            due = now >= self._next_quiet
        else:
            due = now >= self._next_heavy and self._last_cost <= HEAVY_QUIET_ONLY_S
        if stale and due and not self._worker.busy:
            _adopted(self.sessions)  # the worker is idle: no warm batch adopts meanwhile
            frozen_gpu: dict[int, GpuState] = {}
            jobs = []
            with gc_paused():  # thousands of steps copied: 0.06 s a run instead of 0.2-0.4 (`sgtui.gcpause`)
                for key, ts, run, k in stale:
                    g = frozen_gpu.get(ts.index)
                    if g is None:
                        g = frozen_gpu[ts.index] = freeze_gpu(ts.state.gpu)
                    jobs.append((key, k, freeze_run(run), g))
            self._worker.submit(jobs, self._generation)
        if self._verdict_stale:
            summaries = [self._summaries[key][1] for key, _, _ in cols if key in self._summaries]
            self._verdict = verdict(summaries, self.options) if summaries else None
            self._verdict_stale = False
        self.heavy_behind = bool(stale)
        self.settled = quiet and not stale and not self._worker.busy

    def _gpus(self, width: int, keys_by_session: list[dict[str, str]], force: bool) -> tuple[GpuView, ...]:
        now = self.mono()
        due = force or now >= self._next_gpu
        t0 = time.perf_counter()
        out = []
        many = len(self.sessions) > 1
        for ts, keys in zip(self.sessions, keys_by_session):
            k = (ts.state.gpu.samples, width, tuple(r.version for r in ts.state.runs.values()))
            cached = self._gpu.get(ts.index)
            if cached is not None and (cached[0] == k or not due):
                out.append(cached[1])
                continue
            view = build_gpu_view(ts, width, keys, ts.stem if many else "")
            self._gpu[ts.index] = (k, view)
            out.append(view)
        cost = time.perf_counter() - t0
        if due:
            self._next_gpu = self.mono() + max(GPU_MIN_INTERVAL, self.heavy_factor * cost)
        return tuple(out)

    @property
    def quiet_due_at(self) -> float:
        """When (mono) a quiet, not silent, stream may have its next summaries round."""
        return self._next_quiet

    def build(self, nows: list[float], *, spark_width: int = 60, quiet: bool = False, silent: bool | None = None,
              replay: ReplayStatus | None = None, applied: int = 0) -> Snapshot:
        """nows[i]: the session clock of session i (wall time live, replay position in replay).
        quiet: few events lately; silent: none (None: same as quiet)."""
        cols = column_keys(self.sessions, self.expected)
        silent = quiet if silent is None else silent
        if replay is not None and not replay.loading and replay.at_end:
            quiet = silent = True  # the file is played out: no event will come, the numbers may settle now
        self._heavy(cols, quiet, silent, rushing=_rushing(replay))
        keys_by_session: list[dict[str, str]] = [{} for _ in self.sessions]
        for key, ts, label in cols:
            keys_by_session[ts.index][label] = key
        runs = []
        dead_sessions = {**self._replay_dead(replay), **self.dead}
        for i, (key, ts, label) in enumerate(cols):
            run = ts.state.runs.get(label)
            summary = self._summaries.get(key, (None, None))[1]
            now = nows[ts.index]
            running = run is not None and run.current_phase is not None
            dead = ts.index in dead_sessions
            vkey = (id(run), run.version if run else -1, now if running else None, id(summary), i, self.finished,
                    dead)
            cached = self._run_views.get(key)
            if cached is not None and cached[0] == vkey:
                runs.append(cached[1])
                continue
            view = build_run_view(key, i, ts, label, now, summary, self.expected_steps.get(label, 0), self.finished,
                                  dead)
            self._run_views[key] = (vkey, view)
            runs.append(view)
        gpus = self._gpus(spark_width, keys_by_session, force=quiet)
        gpus = tuple(self._ended_gpu(g) if _session_ended(runs, g.session) else g for g in gpus)
        gpus_fresh = quiet
        starts = [ts.state.header.t if ts.state.header else None for ts in self.sessions]
        elapsed = max((nows[i] - s for i, s in enumerate(starts) if s is not None), default=0.0)
        if replay is not None:
            elapsed = replay.position
        ended = bool(runs) and all(r.status in ("ok", "failed", "cancelled", "skipped", "dead") for r in runs)
        problems = tuple(p for ts in self.sessions for p in ts.state.problems)
        session_errors = tuple(e for ts in self.sessions for lbl, r in ts.state.runs.items()
                               if lbl == "session" and r.info is None for e in r.errors)
        self.seq += 1
        return Snapshot(
            seq=self.seq, mode=self.mode, runs=tuple(runs), gpus=gpus, verdict=self._verdict,
            sources=tuple(ts.state.source for ts in self.sessions), problems=problems,
            events=sum(ts.state.events for ts in self.sessions), elapsed=max(0.0, elapsed), all_ended=ended,
            replay=replay, applied=applied, heavy_age=max(0.0, self.mono() - self._heavy_at),
            session_errors=session_errors, settled=self.settled and gpus_fresh, heavy_behind=self.heavy_behind,
            dead=tuple(dead_sessions[i] for i in sorted(dead_sessions)),
        )

    def _ended_gpu(self, g: GpuView) -> GpuView:
        cached = self._ended.get(g.session)
        if cached is None or cached[0] is not g:  # the same object while unchanged: the panel skips a repaint
            cached = self._ended[g.session] = (g, _ended_gpu(g))
        return cached[1]

    def _replay_dead(self, replay: ReplayStatus | None) -> dict[int, str]:
        """Replay at the end of the file: runs without run_end whose sgtui is gone never finish (dead).
        Before the end they were running at that moment; a session still written by a live sgtui is not dead."""
        if self.mode != "replay" or replay is None or replay.loading or not replay.at_end:
            return {}
        out: dict[int, str] = {}
        now = self.mono()
        for ts in self.sessions:
            runs = [r for lbl, r in ts.state.runs.items() if not (lbl == "session" and r.info is None)]
            if not runs or all(r.end is not None for r in runs):
                continue
            checked = self._owners.get(ts.index)
            if checked is None or now - checked[0] >= OWNER_RECHECK_S:
                gone = (self.owner_gone or _owner_gone)(ts.state)
                pid = ts.state.header.pid if ts.state.header else 0
                checked = self._owners[ts.index] = (
                    now, f"sgtui pid {pid} is gone; runs without run_end will never finish" if gone else "")
            if checked[1]:
                out[ts.index] = checked[1]
        return out


#: Finished steps a `HeavyWorker.warm` job reduces between two looks for more, together (`reduce_steps`:
#: ~0.15 ms a step of 4096 ITL values): a summaries round submitted meanwhile waits at most one batch
#: (~40 ms). 256 rather than 64: a 1M-event replay settled 1.07x (best) to 1.20x (median) sooner, with a
#: quarter of the numpy calls and of the looks (4 alternated rounds, benchmarks/replay_load.py --baseline).
WARM_STEPS = 256


def _adopted(sessions: list[TrackedSession]) -> None:
    """The reductions the read's helpers made of the files' tails, given to the steps folded so far: in the
    worker's thread before each warm batch (those steps are then not among it), in the hub's before a
    summaries round (while the worker is idle: one thread at a time)."""
    for ts in sessions:
        ts.adopt_tail()


def _unreduced_steps(sessions: list[TrackedSession], most: int, cursors: dict[int, tuple[RunState, int]]
                     ) -> list[StepState]:
    """Up to `most` RL steps of the sessions' runs whose requests are not reduced yet, each run's last
    step left out (it still grows). Safe from the worker thread while the hub folds: `list(dict...)`
    copies in one step under the GIL, and runs, steps and requests are only ever added.

    Each run's steps are looked at from its cursor on (`cursors`, by run, advanced past the steps handed
    out, which the caller reduces before it asks again): a replay at speed max asks ~100 times, and going
    over every step each time was a third of a second of the fold's GIL. A step that grows after it was
    passed (not seen in sgtui's sessions) is left to the summaries round, which reduces whatever is not."""
    out: list[StepState] = []
    for run in [r for ts in sessions for r in list(ts.state.runs.values())]:
        steps = run.steps
        keys = list(steps)  # in the order they came: by number
        last = max(keys, default=0)
        mine = cursors.get(id(run))
        at = mine[1] if mine is not None and mine[0] is run else 0
        for i in range(at, len(keys)):
            n = keys[i]
            if n == last:
                break  # still growing: the cursor waits here
            at = i + 1
            st = steps[n]
            cached = st._cache.get("requests")
            if n > 0 and (cached is None or cached[0] != len(st.requests)):
                out.append(st)
                if len(out) >= most:
                    break
        cursors[id(run)] = (run, at)
        if len(out) >= most:
            return out
    return out


def _rushing(replay: ReplayStatus | None) -> bool:
    """A replay playing at speed max with events left: the fold runs flat out, nobody reads the numbers."""
    return replay is not None and replay.playing and replay.speed == "max" and not replay.at_end and not replay.loading


#: Replay at its end: how often a session's owner is looked up again (one /proc look).
OWNER_RECHECK_S = 2.0


def _owner_gone(st: SessionState) -> bool:
    from sgtui.sessions_index import owner_state

    try:
        return owner_state(Path(st.source), st) == "gone"
    except OSError:
        return False


def _session_ended(runs: list[RunView], session: int) -> bool:
    mine = [r for r in runs if r.session == session]
    return bool(mine) and all(r.status in ("ok", "failed", "cancelled", "skipped", "dead") for r in mine)


def _ended_gpu(g: GpuView) -> GpuView:
    """Every run of the session ended: the last sample is history (kept in the sparkline), not a reading."""
    if not g.devices or all(d.used_mib is None and d.util is None and not d.shares for d in g.devices):
        return g
    return dataclasses.replace(g, devices=tuple(dataclasses.replace(d, used_mib=None, util=None, shares=())
                                                for d in g.devices))
