"""Immutable snapshots of session state for the UI, built off the event loop.

Widgets never touch a `SessionState`: the hub thread (`sgtui.tui.hub`) owns
the states, folds events into them, and at a bounded rate hands the UI a
`Snapshot` made here. Nothing in this module imports Textual, so every number
the dashboard shows can be checked without a terminal.

Two costs, two paths:
- cheap values (status, phase timeline, request counts, this step's tok/s,
  engine gauges, logs) are rebuilt for every snapshot from running counters
  and the run's timeline; they are what a person watches move;
- `run_summary` (percentiles over every request of the run) and the verdict
  are O(all requests): they are recomputed only when a run changed, and no
  more often than `heavy_factor` times their own cost, so a huge session
  slows the percentiles' refresh instead of the whole UI. When the stream is
  quiet they are always brought up to date, so the final numbers are exact.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sgtui.events import Error, Event, Request
from sgtui.state import (
    GpuState,
    PhaseSpan,
    RunState,
    RunSummary,
    Series,
    SessionState,
    run_summary,
)
from sgtui.options import ReportOptions
from sgtui.verdict import Verdict, verdict

LOG_TAIL = 200
#: Minimum seconds between two recomputations of the GPU sparklines (samples come at ~5 Hz).
GPU_MIN_INTERVAL = 0.2


@dataclass(frozen=True, slots=True)
class SpanView:
    step: int
    name: str
    start: float  # seconds since the run's first event
    duration: float  # so far, for the running phase
    running: bool
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class LogLine:
    source: str
    line: str


@dataclass(frozen=True)
class RunView:
    key: str  # column label, unique across the sessions shown
    label: str  # the run's own label in its session
    index: int  # column index (colour)
    session: int
    backend: str = ""
    strategy: str = ""
    engine_version: str = ""
    device: str = ""
    status: str = "pending"  # pending | running | ok | failed | cancelled | skipped | dead (its sgtui is gone)
    end_detail: str = ""
    num_steps: int = 0
    step: int = 0  # current (or last) RL step, 0 before the first
    phase: str = ""  # running phase ('' when none)
    phase_step: int = 0
    phase_elapsed: float | None = None
    spans: tuple[SpanView, ...] = ()
    done: int = 0  # successful requests in RL steps
    errors: int = 0  # failed requests in RL steps
    step_tok_s: float | None = None  # output tokens / rollout wall time of the current step (live)
    summary: RunSummary | None = None  # may lag the cheap values by a few ticks on huge sessions
    gauges: dict = field(default_factory=dict)  # latest engine gauges
    error_events: tuple[Error, ...] = ()
    log_count: int = 0
    log_tail: tuple[LogLine, ...] = ()
    version: int = 0


@dataclass(frozen=True)
class DeviceView:
    index: int
    name: str
    total_mib: float
    used_mib: float | None
    util: float | None
    spark: tuple[float | None, ...]  # used/total per time bucket, oldest first
    util_spark: tuple[float | None, ...]
    phases: tuple[str, ...]  # phase running in each bucket on this device ('' none)
    markers: tuple[tuple[int, str], ...]  # (bucket, phase) where a phase started
    shares: tuple[tuple[str, float], ...]  # (run key or 'other', MiB) from the latest process list
    bucket_s: float


@dataclass(frozen=True)
class GpuView:
    session: int
    title: str
    error: str  # "no NVIDIA driver", ... ('' when sampled)
    samples: int
    devices: tuple[DeviceView, ...] = ()


@dataclass(frozen=True)
class ReplayStatus:
    playing: bool
    speed: str  # "1x" | "10x" | "max"
    position: float  # seconds since the (aligned) session start
    duration: float  # longest session, seconds
    step: int  # the RL step under the playhead (of `run`), 0 before its first
    at_end: bool
    loading: bool = False
    run: str = ""  # column key of the run under the playhead (the one `g N` seeks in)
    steps: tuple[int, ...] = ()  # that run's steps
    run_steps: tuple[tuple[str, tuple[int, ...]], ...] = ()  # every run's steps: what seek can reach
    epoch: int = 0  # +1 at each backward seek (the fold restarted): panes that accumulate start over
    run_index: int = 0  # 1-based position of `run` among the runs with steps (0: none)

    def steps_of(self, key: str) -> tuple[int, ...]:
        return dict(self.run_steps).get(key, ())


@dataclass(frozen=True)
class Snapshot:
    seq: int
    mode: str  # live | replay | follow
    runs: tuple[RunView, ...]
    gpus: tuple[GpuView, ...]
    verdict: Verdict | None
    sources: tuple[str, ...]
    problems: tuple[str, ...]
    events: int  # events folded so far
    elapsed: float  # seconds since the first session started (session time, never wall time in replay)
    all_ended: bool  # every expected run has ended
    replay: ReplayStatus | None = None
    applied: int = 0  # events applied by the hub (for the rate benchmark)
    heavy_age: float = 0.0  # seconds since the percentiles were last recomputed
    session_errors: tuple[Error, ...] = ()
    settled: bool = False  # built while the stream was quiet: every throttled number is up to date
    heavy_behind: bool = False  # percentiles/verdict lag the cheap numbers (recomputed in the background)
    dead: tuple[str, ...] = ()  # followed sessions whose sgtui died with runs unfinished: one line each


class TrackedSession:
    """A `SessionState` plus running counters that make the dashboard's cheap values O(1) per tick."""

    def __init__(self, source: str, index: int = 0) -> None:
        self.state = SessionState(source)
        self.index = index
        self.req: dict[str, dict[int, list[int]]] = {}  # run -> step -> [ok, errors, output tokens]

    def apply(self, e: Event) -> None:
        self.state.apply(e)
        if e.kind == "request":
            self._count(e)  # type: ignore[arg-type]

    def _count(self, e: Request) -> None:
        if e.step <= 0:
            return
        per_run = self.req.get(e.run)
        if per_run is None:
            per_run = self.req[e.run] = {}
        c = per_run.get(e.step)
        if c is None:
            c = per_run[e.step] = [0, 0, 0]
        if e.error:
            c[1] += 1
        else:
            c[0] += 1
            c[2] += e.output_tokens

    @property
    def stem(self) -> str:
        return Path(self.state.source).stem if self.state.source else "live"


def column_keys(sessions: list[TrackedSession], expected: list[str] | None = None) -> list[tuple[str, TrackedSession, str]]:
    """(key, session, label) for every run shown, in order; keys unique as in `sgtui.export.combined`."""
    labels_per_session: list[list[str]] = []
    for i, ts in enumerate(sessions):
        labels = [lbl for lbl, r in ts.state.runs.items() if not (lbl == "session" and r.info is None)]
        if i == 0 and expected:
            labels = list(expected) + [lbl for lbl in labels if lbl not in expected]
        labels_per_session.append(labels)
    seen: dict[str, int] = {}
    for labels in labels_per_session:
        for lbl in labels:
            seen[lbl] = seen.get(lbl, 0) + 1
    out = []
    for ts, labels in zip(sessions, labels_per_session):
        for lbl in labels:
            key = lbl if seen[lbl] == 1 or len(sessions) == 1 else f"{ts.stem}:{lbl}"
            out.append((key, ts, lbl))
    return out


def _span_view(sp: PhaseSpan, base: float, now: float) -> SpanView:
    running = sp.end is None
    return SpanView(sp.step, sp.name, sp.start - base, max(0.0, sp.duration_at(now)), running, sp.ok, sp.detail)


def build_run_view(key: str, index: int, ts: TrackedSession, label: str, now: float,
                   summary: RunSummary | None, num_steps: int = 0, finished: bool = False,
                   dead: bool = False) -> RunView:
    """dead: the session's sgtui is gone (followed session), so a run without run_end never ends."""
    run = ts.state.runs.get(label)
    if run is None:
        return RunView(key=key, label=label, index=index, session=ts.index, num_steps=num_steps,
                       status="skipped" if finished or dead else "pending")
    info = run.info
    base = run.first_t or 0.0
    spans = tuple(_span_view(sp, base, now) for sp in run.timeline)
    counts = ts.req.get(label, {})
    done = sum(c[0] for c in counts.values())
    errs = sum(c[1] for c in counts.values())
    steps = run.rl_steps
    step = steps[-1] if steps else 0
    tok_s = None
    if step:
        roll = run.steps[step].phases.get("rollout")
        c = counts.get(step)
        if roll is not None and c is not None:
            dur = roll.duration_at(now)
            tok_s = c[2] / dur if dur > 0 else None
    cur = run.current_phase
    if info is not None and not num_steps:
        num_steps = int(info.config.get("num_steps") or 0) if isinstance(info.config, dict) else 0
    status = run.status if (info is not None or run.end is not None) else ("running" if run.first_t else "pending")
    if dead and run.end is None:
        status = "dead"
        cur = None  # no phase is running: its sgtui is gone
    # a gauge is a live reading: once the run ended (or died) its last value is no longer true
    live = run.end is None and status != "dead"
    gauges = {name: s.v[-1] for name, s in run.engine.items() if s.v} if live else {}
    n = min(LOG_TAIL, len(run.logs))
    tail = tuple(LogLine(e.source, e.line) for e in list(run.logs)[-n:]) if n else ()
    return RunView(
        key=key, label=label, index=index, session=ts.index,
        backend=info.backend if info else "", strategy=info.strategy if info else "",
        engine_version=info.engine_version if info else "", device=info.device if info else "",
        status=status, end_detail=run.end.detail if run.end else "", num_steps=num_steps, step=step,
        phase=cur.name if cur else "", phase_step=cur.step if cur else 0,
        phase_elapsed=max(0.0, cur.duration_at(now)) if cur else None,
        spans=spans, done=done, errors=errs, step_tok_s=tok_s, summary=summary, gauges=gauges,
        error_events=tuple(run.errors), log_count=run.log_count, log_tail=tail, version=run.version,
    )


def _runs_on(ts: TrackedSession, device: int) -> list[RunState]:
    out = []
    for r in ts.state.runs.values():
        if r.info is None:
            continue
        gpus = r.info.gpus or []
        if not gpus or device in gpus:
            out.append(r)
    return out


def build_gpu_view(ts: TrackedSession, width: int, keys: dict[str, str], title: str = "") -> GpuView:
    """Per device: memory and utilisation sparklines over the whole session, coloured by phase."""
    g: GpuState = ts.state.gpu
    if not g.devices:
        err = g.error or ("waiting for the first GPU sample" if g.samples == 0 else "no GPU devices")
        return GpuView(ts.index, title, err, g.samples)
    width = max(8, width)
    t0 = min((d.used.t[0] for d in g.devices.values() if d.used.t), default=0.0)
    t1 = max((d.used.t[-1] for d in g.devices.values() if d.used.t), default=t0)
    span = max(t1 - t0, 0.0)
    n_samples = max((len(d.used.t) for d in g.devices.values()), default=1)
    interval = span / (n_samples - 1) if n_samples > 1 else 0.25
    bucket = max(span / width, interval, 0.05)  # never finer than the sampling: no holes
    n = min(width, int(span / bucket) + 1)
    shares_by_dev: dict[int, dict[str, float]] = {}
    for p in g.processes:
        used = p.get("used_mib") or 0.0
        run = p.get("run") or "other"
        dev = shares_by_dev.setdefault(p.get("device", 0), {})
        k = keys.get(run, run if run == "other" else run)
        dev[k] = dev.get(k, 0.0) + used
    devices = []
    for idx in sorted(g.devices):
        d = g.devices[idx]
        total = d.total_mib or 1.0
        sums = [0.0] * n
        cnts = [0] * n
        for t, v in zip(d.used.t, d.used.v):
            b = min(n - 1, int((t - t0) / bucket))
            sums[b] += v
            cnts[b] += 1
        spark = _carry(tuple((s / c / total) if c else None for s, c in zip(sums, cnts)))
        usums = [0.0] * n
        ucnts = [0] * n
        for t, v in zip(d.util.t, d.util.v):
            b = min(n - 1, max(0, int((t - t0) / bucket)))
            usums[b] += v
            ucnts[b] += 1
        uspark = _carry(tuple((s / c / 100.0) if c else None for s, c in zip(usums, ucnts)))
        phases = [""] * n
        markers: list[tuple[int, str]] = []
        for r in _runs_on(ts, idx):
            for sp in r.timeline:
                end = sp.end if sp.end is not None else t1
                if end < t0 or sp.start > t1 + bucket:
                    continue
                b0 = min(n - 1, max(0, int((sp.start - t0) / bucket)))
                b1 = min(n - 1, max(0, int((end - t0) / bucket)))
                for b in range(b0, b1 + 1):
                    phases[b] = sp.name
                if sp.start >= t0:
                    markers.append((b0, sp.name))
        markers.sort()
        shares = tuple(sorted(shares_by_dev.get(idx, {}).items(), key=lambda kv: (kv[0] == "other", kv[0])))
        devices.append(DeviceView(
            index=idx, name=d.name, total_mib=d.total_mib, used_mib=d.used.v[-1] if d.used.v else None,
            util=d.util.v[-1] if d.util.v else None, spark=spark, util_spark=uspark, phases=tuple(phases),
            markers=tuple(markers), shares=shares, bucket_s=bucket,
        ))
    return GpuView(ts.index, title, "", g.samples, tuple(devices))


def _carry(values: tuple[float | None, ...]) -> tuple[float | None, ...]:
    """A bucket without a sample shows the last value seen (memory does not vanish between samples)."""
    out: list[float | None] = []
    last = None
    for v in values:
        if v is None:
            v = last
        out.append(v)
        last = v
    return tuple(out)


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


def _summary(key: str, run: RunState, gpu: GpuState, include_first_step: bool = False) -> RunSummary:
    s = run_summary(run, gpu, include_first_step)
    return dataclasses.replace(s, label=key) if s.label != key else s


def freeze_run(run: RunState) -> RunState:
    """A copy `run_summary` can read in another thread while the hub keeps appending to the original.

    O(steps + requests) reference copies (a few ms for 100k requests); PhaseSpans are shared: an
    end set meanwhile is read atomically and the next round corrects it. So is each step's cache of
    derived numbers (keyed by what they were computed from), so a finished step is reduced once for
    the whole session rather than once per round (at 1M events: 15.5 s -> 4.3 s a round).
    """
    # every field, so that no summary input is left behind (memory series, capacities); only what the hub
    # appends to or replaces is copied
    r = dataclasses.replace(run, _cache={}, logs=deque(), errors=list(run.errors), procs=dict(run.procs),
                            timeline=list(run.timeline), open_phases=dict(run.open_phases),
                            engine={k: _series(v) for k, v in list(run.engine.items())},
                            engine_mem=_series(run.engine_mem), trainer_mem=_series(run.trainer_mem),
                            device_mem=_series(run.device_mem))
    r.steps = {n: dataclasses.replace(st, phases=dict(st.phases), requests=list(st.requests))
               for n, st in list(run.steps.items())}
    return r


def _series(x: Series) -> Series:
    return Series(list(x.t), list(x.v))


def freeze_gpu(g: GpuState) -> GpuState:
    """As freeze_run: every field, the appended ones copied (the host witness too: drift reads it)."""
    h = g.host
    host = dataclasses.replace(h, starts=list(h.starts), foreign=_series(h.foreign), own=list(h.own),
                               gpu_foreign_t=list(h.gpu_foreign_t), gpu_foreign=list(h.gpu_foreign),
                               owned_pids=set(h.owned_pids))
    return dataclasses.replace(
        g, devices={i: dataclasses.replace(d, used=_series(d.used), util=_series(d.util))
                    for i, d in list(g.devices.items())},
        processes=list(g.processes), host=host)


class HeavyWorker:
    """One background thread that computes run summaries from frozen copies, one job at a time."""

    def __init__(self, on_done: Callable[[], None] = lambda: None, include_first_step: bool = False) -> None:
        self.on_done = on_done  # called from the worker thread when a result is ready
        self.include_first_step = include_first_step
        self._lock = threading.Lock()
        self._job: list | None = None
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
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="sgtui-summaries", daemon=True)
            self._thread.start()
        self._wake.set()

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
                gen = self._gen
            if jobs is None:
                continue
            t0 = time.perf_counter()
            results = []
            try:
                for key, k, run, gpu in jobs:
                    results.append((key, k, _summary(key, run, gpu, self.include_first_step)))
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

    def _heavy(self, cols: list[tuple[str, TrackedSession, str]], quiet: bool, silent: bool) -> None:
        """Bring run summaries and the verdict up to date, always in the background worker on frozen
        copies: the hub keeps folding and snapshotting meanwhile. While events stream, rounds are
        spaced by their cost (`heavy_interval`); a round slower than HEAVY_QUIET_ONLY_S waits for a
        quiet stream; a quiet stream spaces them by `quiet_interval`; a silent one (no event for a
        moment: a burst ended) gets its round at once. `self.settled` says the numbers are up to date."""
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
        if silent:
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
        self._heavy(cols, quiet, quiet if silent is None else silent)
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


def fmt_clock(seconds: float) -> str:
    """m:ss or h:mm:ss of a duration (session time, never the wall clock)."""
    s = int(math.floor(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_steps(steps: tuple[int, ...] | list[int]) -> str:
    """"1-4" for contiguous steps, "1-3, 5" otherwise, "none" for no step."""
    if not steps:
        return "none"
    out: list[str] = []
    s = sorted(steps)
    lo = prev = s[0]
    for n in s[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(lo) if lo == prev else f"{lo}-{prev}")
        if n is not None:
            lo = prev = n
    return ", ".join(out)
