"""Snapshots of the tracked sessions at a bounded cost: `SnapshotBuilder`, its background worker and its pace.

Two costs, two paths:
- cheap values (status, phase timeline, request counts, this step's tok/s, engine gauges, logs) are
  rebuilt for every snapshot by the builders of `sgtui.viewmodel.views`, from the fold's running counters
  and the run's timeline, and cached per run version;
- `run_summary` (percentiles over every request of the run) and the verdict are O(all requests): they
  are recomputed only when a run changed, in a background thread (`HeavyWorker`) on frozen copies
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
import os
import threading
import time
from pathlib import Path
from typing import Callable

from sgtui.options import ReportOptions
from sgtui.state import (
    GpuState,
    RunState,
    RunSummary,
    SessionState,
    StepState,
    freeze_gpu,
    freeze_run,
    run_summary,
    step_request_stats,
)
from sgtui.verdict import Verdict, verdict
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


#: Seconds between two summaries rounds while the runs change, however cheap a round is. Each round
#: recomputes every percentile of the run (O(all requests), in `sgtui.state`); at the old 0.1 s a
#: slow stream that counts as quiet (the CPU box: ~25 requests/s) had one round right after another,
#: about a third of a core (benchmarks/ui_cpu.py), taken from the engine being measured. The live
#: values (this step's tok/s, requests, phase) do not wait for it; only means and percentiles do.
HEAVY_MIN_INTERVAL = 1.0
#: A summary round slower than this holds the GIL in long stretches (pure-Python sorts of every ITL
#: value of a run): during a stream such rounds are spaced much further apart, so the UI stays
#: responsive and the percentiles say how old they are; a quiet stream brings them up to date.
HEAVY_SLOW_S = 0.2
#: Rounds slower than this (millions of ITL values) run only when the stream is quiet.
HEAVY_QUIET_ONLY_S = 0.3


def heavy_interval(cost: float, factor: float) -> float:
    """Seconds until the next summaries round while events stream, from the last round's cost: cheap
    rounds keep the percentiles live; costly ones (which hold the GIL in long sorts) come rarely."""
    if cost > HEAVY_SLOW_S:
        return max(10.0, 20.0 * cost)
    if cost > 0.05:
        return max(HEAVY_MIN_INTERVAL, 10.0 * cost)
    return quiet_interval(cost, factor)


def quiet_interval(cost: float, factor: float) -> float:
    """Seconds until the next round while the stream is quiet but not silent (a few events a second:
    a slow rollout, GPU samples during train): any round may run, spaced by its cost."""
    return max(HEAVY_MIN_INTERVAL, factor * cost)


#: Threads a summaries round spreads its runs over, and a warm batch its steps: numpy's passes (the pooled
#: percentiles' selection and squares, a step's sort and exact sums) release the GIL, so two runs' numbers are
#: computed side by side on two cores (benchmarks/replay_load.py: the round after a replay at speed max).
PARALLEL = max(1, min(2, os.cpu_count() or 1))


def in_parallel(fn: Callable, items: list, threads: int = PARALLEL) -> list:
    """[fn(x) for x in items], spread over `threads` threads (the caller's among them), in order; the first
    exception is raised once all are done. Each item's work is independent (its own run, its own step)."""
    if threads < 2 or len(items) < 2:
        return [fn(x) for x in items]
    out: list = [None] * len(items)
    errors: list[BaseException] = []

    def part(k: int) -> None:
        try:
            for i in range(k, len(items), threads):
                out[i] = fn(items[i])
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
            errors.append(e)

    helpers = [threading.Thread(target=part, args=(k,), name="sgtui-summaries-part", daemon=True)
               for k in range(1, min(threads, len(items)))]
    for h in helpers:
        h.start()
    part(0)
    for h in helpers:
        h.join()
    if errors:
        raise errors[0]
    return out


def _summary(key: str, run: RunState, gpu: GpuState, include_first_step: bool = False) -> RunSummary:
    s = run_summary(run, gpu, include_first_step)
    return dataclasses.replace(s, label=key) if s.label != key else s


class HeavyWorker:
    """One background thread that computes run summaries from frozen copies, one job at a time."""

    def __init__(self, on_done: Callable[[], None] = lambda: None, include_first_step: bool = False) -> None:
        self.on_done = on_done  # called from the worker thread when a result is ready
        self.include_first_step = include_first_step
        self._lock = threading.Lock()
        self._job: list | None = None
        self._warm: Callable[[], list[StepState]] | None = None
        self._result: tuple[list, float, int] | None = None
        self._gen = 0
        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def submit(self, jobs: list, generation: int = 0) -> None:
        with self._lock:
            self._job = jobs
            self._gen = generation
            self._idle.clear()
        self._start()
        self._wake.set()

    def warm(self, find: Callable[[], list[StepState]]) -> None:
        """Reduce finished steps' requests now (their cache, shared with every frozen copy), batch after
        batch of `find()` until it gives none, so the summaries round after a replay at speed max only
        pools them. numpy's passes release the GIL, so this runs beside the fold rather than after it.
        No result; on_done is called when idle again. `find` runs in the worker thread."""
        with self._lock:
            self._warm = find
            self._idle.clear()
        self._start()
        self._wake.set()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="sgtui-summaries", daemon=True)
            self._thread.start()

    def take(self) -> tuple[list, float, int] | None:
        with self._lock:
            out, self._result = self._result, None
        return out

    def wait(self, timeout: float = 60.0) -> None:
        self._idle.wait(timeout)

    def _main(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                jobs, self._job = self._job, None
                warm, self._warm = self._warm, None
                gen = self._gen
            if warm is not None:
                try:
                    while self._job is None and (steps := warm()):
                        in_parallel(step_request_stats, steps)
                except Exception:  # noqa: BLE001 - a step torn meanwhile: the summaries round redoes it
                    pass
            if jobs is None:
                with self._lock:
                    idle = self._job is None
                    if idle:
                        self._idle.set()
                if warm and idle:
                    self.on_done()  # the hub may start its round now
                continue
            t0 = time.perf_counter()
            results = []
            try:
                results = in_parallel(lambda j: (j[0], j[1], _summary(j[0], j[2], j[3], self.include_first_step)),
                                      jobs)
            except Exception:  # noqa: BLE001 - a torn copy: the next round (or the quiet one) redoes it
                results = []
            with self._lock:
                self._result = (results, time.perf_counter() - t0, gen)
                self._idle.set()
            self.on_done()


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
            if not self._worker.busy and _unreduced_steps(sessions, 1):
                self._worker.warm(lambda: _unreduced_steps(sessions, WARM_STEPS))
        elif silent:
            due = True
        elif quiet:
            due = now >= self._next_quiet
        else:
            due = now >= self._next_heavy and self._last_cost <= HEAVY_QUIET_ONLY_S
        if stale and due and not self._worker.busy:
            frozen_gpu: dict[int, GpuState] = {}
            jobs = []
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


#: Finished steps a `HeavyWorker.warm` job reduces between two looks for more (~0.5 ms a step of 4096
#: ITL values): a summaries round submitted meanwhile waits at most one batch.
WARM_STEPS = 64


def _unreduced_steps(sessions: list[TrackedSession], most: int) -> list[StepState]:
    """Up to `most` RL steps of the sessions' runs whose requests are not reduced yet, each run's last
    step left out (it still grows). Safe from the worker thread while the hub folds: `list(dict...)`
    copies in one step under the GIL, and runs, steps and requests are only ever added."""
    out: list[StepState] = []
    for run in [r for ts in sessions for r in list(ts.state.runs.values())]:
        steps = run.steps
        for n in sorted(k for k in list(steps) if k > 0)[:-1]:
            st = steps[n]
            cached = st._cache.get("requests")
            if cached is None or cached[0] != len(st.requests):
                out.append(st)
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
