"""Immutable views of session state for the UI, and the pure functions that build them.

Widgets never touch a `SessionState`: the hub thread (`sgtui.viewmodel.hub`) owns the states, folds
events into them (`SessionState.apply`, the only fold: nothing here keeps counters of its own), and at a
bounded rate hands the UI a `Snapshot` (`sgtui.viewmodel.snapshot` assembles it from the builders here).
Nothing in this module imports Textual, so every number the dashboard shows can be checked without a
terminal.

The cheap values of a run (status, phase timeline, request counts, this step's tok/s, engine gauges,
logs) are rebuilt for every snapshot from the fold's running counters and the run's timeline: they are
what a person watches move, and they cost O(phases), never O(requests). Replay and live read the same
counters from the same fold, so they show the same numbers. The phase timeline holds the setup lane and the
last `TIMELINE_STEPS` RL steps only, so a snapshot costs O(window), never O(steps) (`window_spans`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sgtui.events import Error, Event
from sgtui.labels import run_labels
from sgtui.session import ReadResult
from sgtui.state import (GpuState, PhaseSpan, RunState, RunSummary, SessionState, TailStep, adopt_reductions,
                         unpack_tail)
from sgtui.verdict import Verdict

LOG_TAIL = 200

#: RL steps of each run the timeline holds (`RunView.spans`): the most recent ones. A terminal shows a few dozen
#: lanes anyway; replay's step seek (`g N`) reaches any step and `sgtui report` lists every step. Why: a replay
#: of 2,100 steps per run (300k events; 7,000 at 1M) built a SpanView for every phase of every step on the hub
#: thread, and the UI drew one lane per step on every snapshot with a height that changed each time (a
#: relayout): ~2.4 s of GIL time on the UI thread competing with the fold (py-spy, benchmarks/replay_load.py).
TIMELINE_STEPS = 60


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
    spans: tuple[SpanView, ...] = ()  # step 0 (setup, shutdown) and the last TIMELINE_STEPS RL steps
    hidden_steps: int = 0  # RL steps left out of `spans` (older than the window)
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
    """One session the hub shows: its `SessionState` (the fold), its position among the sessions, its name.

    A thin holder: every number is the fold's (`RunState.requests_completed`, `StepState.output_tokens`, ...)."""

    def __init__(self, source: str, index: int = 0) -> None:
        self.state = SessionState(source)
        self.index = index
        #: the fold's own `apply`, no call in between (a replay applies a million events)
        self.apply: Callable[[Event], None] = self.state.apply
        self._read: ReadResult | None = None  # the file's read, while its helper may still hand reductions over
        self._pending: list[TailStep] | None = None  # reductions handed over, their steps not folded yet

    def keep_tail(self, read: ReadResult | None) -> None:
        """Adopt, from now on, the reductions of the file's tail its read's helper makes (`adopt_tail`)."""
        self.close()
        if read is not None and read.tail is not None:
            self._read = read

    def adopt_tail(self) -> None:
        """Give the folded steps of the file's tail the reductions the read's helper made of their requests
        (`sgtui.state.adopt_reductions`), as far as both are there, so those steps are not reduced a second
        time here. One thread at a time (`snapshot._adopted`): the summaries worker's before each warm batch,
        the hub's before a summaries round while the worker is idle."""
        read = self._read
        if read is None or read.tail is None:
            return
        if self._pending is None:
            got = read.tail.reductions()
            if got is None:
                if read.tail.ended:  # it failed: the worker reduces those steps itself
                    self.close()
                return
            self._pending = unpack_tail(got)
        self._pending = adopt_reductions(self.state.runs, self._pending, read.events, read.tail_start)
        if not self._pending:
            self.close()

    def close(self) -> None:
        """Stop the read's helper if it still runs; forget what it has not handed over."""
        if self._read is not None and self._read.tail is not None:
            self._read.tail.close()
        self._read = self._pending = None

    @property
    def stem(self) -> str:
        return Path(self.state.source).stem if self.state.source else "live"


def column_keys(sessions: list[TrackedSession], expected: list[str] | None = None) -> list[tuple[str, TrackedSession, str]]:
    """(key, session, label) for every run shown, in order; keys are the reports' labels (`sgtui.labels`)."""
    labels_per_session: list[list[str]] = []
    for i, ts in enumerate(sessions):
        labels = [lbl for lbl, r in ts.state.runs.items() if not (lbl == "session" and r.info is None)]
        if i == 0 and expected:
            labels = list(expected) + [lbl for lbl in labels if lbl not in expected]
        labels_per_session.append(labels)
    out = []
    for ts, labels, keys in zip(sessions, labels_per_session, run_labels(labels_per_session)):
        out.extend((key, ts, lbl) for key, lbl in zip(keys, labels))
    return out


def _span_view(sp: PhaseSpan, base: float, now: float) -> SpanView:
    running = sp.end is None
    return SpanView(sp.step, sp.name, sp.start - base, max(0.0, sp.duration_at(now)), running, sp.ok, sp.detail)


def window_spans(run: RunState, window: list[int]) -> list[PhaseSpan]:
    """The run's spans of step 0 and of the RL steps in `window` (the most recent ones, ascending), in start
    order, reading only the end of the timeline: the window's spans and what started after them, the setup
    spans at its head, and the last span of each name at step 0 between them (--interleave's park/unpark turn
    edges, which the timeline does not draw). O(window + setup), never O(steps)."""
    tl = run.timeline
    keep = set(window)
    lo = min((sp.start for s in window if s in run.steps for sp in run.steps[s].phases.values()), default=math.inf)
    i = len(tl)
    # back to the window's first span; past it while the spans are still the window's (a phase name repeated
    # in a step: `StepState.phases` holds its last span only)
    while i > 0 and (tl[i - 1].start >= lo or tl[i - 1].step in keep):
        i -= 1
    tail = [sp for sp in tl[i:] if sp.step == 0 or sp.step in keep]
    j = 0
    while j < i and tl[j].step == 0:
        j += 1
    head = tl[:j]
    zero = run.steps.get(0)
    if zero is not None:
        seen = {id(sp) for sp in head} | {id(sp) for sp in tail}
        between = sorted((sp for sp in zero.phases.values() if id(sp) not in seen), key=lambda sp: sp.start)
        head = head + between
    return head + tail


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
    steps = run.rl_steps
    window = steps[-TIMELINE_STEPS:]
    hidden = len(steps) - len(window)
    shown = window_spans(run, window) if hidden else run.timeline
    spans = tuple(_span_view(sp, base, now) for sp in shown)
    step = steps[-1] if steps else 0
    tok_s = None
    if step:
        st = run.steps[step]
        roll = st.phases.get("rollout")
        if roll is not None and (st.requests_completed or st.requests_failed):
            dur = roll.duration_at(now)
            tok_s = st.output_tokens / dur if dur > 0 else None
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
        spans=spans, hidden_steps=hidden, done=run.requests_completed, errors=run.requests_failed, step_tok_s=tok_s,
        summary=summary, gauges=gauges,
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

