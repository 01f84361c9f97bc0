"""Fold events into per-run, per-step state; derive every number shown anywhere.

`SessionState.apply(event)` is the only way state changes: the live dashboard
feeds it events as the orchestrator reads them, replay feeds it a file, and
both therefore show the same numbers. `apply` only appends and indexes (it
runs for every event of a million-event replay); aggregates are computed on
demand by pure functions (`calculate_metrics`, `step_summary`,
`run_summary`, `memory_summary`) and cached per run until the run changes.

A step's requests are reduced once (`step_request_stats`: counts, exact sums,
sorted distributions) and kept on the step until a request is added to it; a
run's metrics pool its steps' reductions (`pooled_metrics`) instead of
pooling and sorting every ITL value of the run again on each summary.

Request metrics follow `vllm bench serve` exactly (benchmarks/serve.py,
`calculate_metrics`): failed requests count only as errors; TTFT, TPOT and
E2E are per successful request; ITL is pooled over every chunk gap of every
successful request; TPOT = (latency - ttft) / (output_tokens - 1) for
requests with more than one output token; throughput divides by the rollout
wall time (the `rollout` phase), and percentiles are numpy's linear ones.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import mul
from typing import Iterable, Sequence

from sgtui import compare, stats
from sgtui.compare import RunProfile
from sgtui.events import (
    STEP_PHASES,
    EngineGauges,
    Error,
    Event,
    GpuSample,
    HostSample,
    Log,
    Phase,
    Proc,
    Request,
    RunEnd,
    RunStart,
    SessionHeader,
    Train,
)

PERCENTILES = (50.0, 90.0, 99.0)
#: Phases whose time is "transition overhead": the cost of getting the engine
#: out of the trainer's way and back with new weights.
TRANSITION_PHASES = ("offload", "reload", "weight_sync")
LOG_LINES_KEPT = 2000


@dataclass(slots=True)
class PhaseSpan:
    run: str
    step: int
    name: str
    start: float
    end: float | None = None
    ok: bool = True
    detail: str = ""
    data: dict = field(default_factory=dict)  # Phase.data of the end edge (a full-weight sync's numbers)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def duration_at(self, now: float) -> float:
        """Duration so far for a running phase (the live timeline grows it)."""
        return (self.end if self.end is not None else now) - self.start


@dataclass
class StepState:
    step: int
    phases: dict[str, PhaseSpan] = field(default_factory=dict)  # last span of each name
    requests: list[Request] = field(default_factory=list)
    train: Train | None = None
    engine_gauges: int = 0
    #: derived numbers, each with the key it was computed for (the request count: requests are only ever
    #: appended, so a step's numbers stay valid until its next request)
    _cache: dict = field(default_factory=dict, repr=False)
    #: the engine's KV-cache capacity in tokens as first read in this step (gauge `kv_capacity_tokens`: vLLM's
    #: num_gpu_blocks x block_size, SGLang's max_total_num_tokens), None when the engine did not report it
    kv_capacity: float | None = None


@dataclass
class Series:
    """A time series kept as two parallel lists (cheap appends, bisect by time)."""

    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)

    def append(self, t: float, v: float) -> None:
        self.t.append(t)
        self.v.append(v)

    def window(self, start: float, end: float) -> list[float]:
        lo = bisect.bisect_left(self.t, start)
        hi = bisect.bisect_right(self.t, end)
        return self.v[lo:hi]

    def at_or_after(self, t: float, limit: float | None = None) -> float | None:
        i = bisect.bisect_left(self.t, t)
        if i < len(self.t) and (limit is None or self.t[i] <= limit):
            return self.v[i]
        return None

    def before(self, t: float) -> float | None:
        """Last value sampled at or before t."""
        i = bisect.bisect_right(self.t, t)
        return self.v[i - 1] if i > 0 else None


@dataclass
class DeviceSeries:
    index: int
    name: str = ""
    total_mib: float = 0.0
    used: Series = field(default_factory=Series)
    util: Series = field(default_factory=Series)


@dataclass
class HostState:
    """The foreign-load witness (sgtui.host, issue 13): host CPU samples and the GPU processes no run owns."""

    starts: list[float] = field(default_factory=list)  # window start of each host sample (parallel to foreign.t)
    foreign: Series = field(default_factory=Series)  # t = window end, v = cores busy beyond the session's own
    own: list[dict] = field(default_factory=list)  # each sample's cores by run label (parallel to foreign.t)
    cores: int = 0  # CPUs the session may use
    samples: int = 0
    error: str = ""
    #: GPU samples that held processes no run owns: their times and ((device, MiB, pid), ...)
    gpu_foreign_t: list[float] = field(default_factory=list)
    gpu_foreign: list[tuple] = field(default_factory=list)
    #: pids a run owned in some GPU sample: never foreign (a trainer rank is announced only once it is ready,
    #: and NVML lists it before that)
    owned_pids: set = field(default_factory=set)
    gpu_seen: bool = False  # NVML listed any process at all
    gpu_mapped: bool = False  # NVML listed a process a run owns: PIDs map (not another PID namespace)


@dataclass(frozen=True)
class StepDrift:
    """Foreign load during one step (first phase start to last phase end); None where not known."""

    samples: int  # host samples overlapping the step (0: no CPU witness)
    cores: int  # CPUs the session could use
    foreign_cpu_mean: float | None  # cores, mean over the step (samples weighted by their overlap with it)
    foreign_cpu_max: float | None  # cores, the most in one sample
    gpu_foreign_procs: int | None  # most processes no run owns in one GPU sample, on the run's devices
    gpu_foreign_mib: float | None  # most memory they held in one sample
    #: cores the session's other runs used meanwhile (mean, weighted as foreign_cpu_mean): not foreign, but it
    #: competes too (on CPU a parked SGLang scheduler keeps polling a core through the other run's step)
    peer_cpu_mean: float | None = None


def step_drift(step: StepState, gpu: "GpuState", devices: Sequence[int], now: float,
               label: str = "") -> StepDrift | None:
    """The step's foreign load from the host samples overlapping it and the GPU samples within it; None when
    the session has neither witness for it (sessions before the witness existed, or no sample yet)."""
    spans = list(step.phases.values())
    if not spans:
        return None
    start = min(sp.start for sp in spans)
    end = max(sp.end if sp.end is not None else now for sp in spans)
    host = gpu.host
    n, mean, peak = 0, None, None
    lo = bisect.bisect_right(host.foreign.t, start)
    weighted = weight = peers = 0.0
    for i in range(lo, len(host.foreign.t)):
        s0, s1, v = host.starts[i], host.foreign.t[i], host.foreign.v[i]
        if s0 >= end:
            break
        w = max(min(s1, end) - max(s0, start), 1e-9)
        n += 1
        weighted, weight = weighted + v * w, weight + w
        peers += w * sum(c for k, c in host.own[i].items()
                         if k not in (label, "sgtui") and isinstance(c, (int, float)))
        peak = v if peak is None else max(peak, v)
    if n:
        mean = weighted / weight
    procs = mib = None
    wanted = set(devices) or set(gpu.devices)
    sampled = any(gpu.devices[i].used.window(start, end) for i in wanted if i in gpu.devices)
    # Only sessions with the host witness: before it, trainer ranks were not attributed and read as "other".
    if sampled and (host.samples or host.error) and (host.gpu_mapped or not host.gpu_seen):
        procs, mib = 0, 0.0
        lo, hi = bisect.bisect_left(host.gpu_foreign_t, start), bisect.bisect_right(host.gpu_foreign_t, end)
        for entries in host.gpu_foreign[lo:hi]:
            mine = [m for d, m, pid in entries if d in wanted and pid not in host.owned_pids]
            procs, mib = max(procs, len(mine)), max(mib, float(sum(mine)))
    if not n and procs is None:
        return None
    return StepDrift(n, host.cores, mean, peak, procs, mib, peers / weight if n else None)


@dataclass
class GpuState:
    devices: dict[int, DeviceSeries] = field(default_factory=dict)
    processes: list[dict] = field(default_factory=list)  # latest sample's processes
    error: str = ""  # e.g. "no NVIDIA driver"
    samples: int = 0
    interval_s: float = 0.0  # seconds between samples, from the session header (0.0: not recorded)
    #: the machine's other witness, kept here because every summary is made from (run, GpuState)
    host: HostState = field(default_factory=HostState)


@dataclass
class RunState:
    label: str
    info: RunStart | None = None
    status: str = "running"  # running | ok | failed | cancelled
    steps: dict[int, StepState] = field(default_factory=dict)
    timeline: list[PhaseSpan] = field(default_factory=list)  # every span, in start order
    open_phases: dict[tuple[int, str], PhaseSpan] = field(default_factory=dict)
    errors: list[Error] = field(default_factory=list)
    logs: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES_KEPT))
    log_count: int = 0
    engine: dict[str, Series] = field(default_factory=dict)
    procs: dict[int, Proc] = field(default_factory=dict)  # pgid -> last Proc event
    #: GPU memory of the run's processes other than the runner itself (the engine's), from NVML per-process
    #: samples; empty where NVML cannot map processes (e.g. another PID namespace).
    engine_mem: Series = field(default_factory=Series)
    trainer_mem: Series = field(default_factory=Series)  # the megatron trainer's processes (NVML, by role)
    end: RunEnd | None = None
    first_t: float | None = None
    last_t: float = 0.0
    version: int = 0  # bumped on every change: cache key for derived numbers and UI redraws
    _cache: dict = field(default_factory=dict, repr=False)
    #: used memory of the run's devices summed within each sample (NVML device level, every process on them):
    #: peaks and floors are of this sum, the most the devices held at once, not a sum of per-device maxima
    #: reached at different times
    device_mem: Series = field(default_factory=Series)

    def step_state(self, step: int) -> StepState:
        s = self.steps.get(step)
        if s is None:
            s = self.steps[step] = StepState(step)
        return s

    @property
    def current_phase(self) -> PhaseSpan | None:
        return self.timeline[-1] if self.timeline and self.timeline[-1].end is None else None

    @property
    def rl_steps(self) -> list[int]:
        return sorted(s for s in self.steps if s > 0)


class SessionState:
    """Everything known about one session, folded from its events in order."""

    def __init__(self, source: str = "") -> None:
        self.source = source  # file path or "live"
        self.header: SessionHeader | None = None
        self.runs: dict[str, RunState] = {}
        self.gpu = GpuState()
        self.events = 0
        self.last_t = 0.0
        self.problems: list[str] = []  # reader warnings (bad lines, truncated tail), shown with reports
        self._dispatch = {
            "session": self._on_session,
            "run_start": self._on_run_start,
            "phase": self._on_phase,
            "request": self._on_request,
            "gpu": self._on_gpu_sample,
            "host": self._on_host,
            "engine": self._on_engine,
            "train": self._on_train,
            "log": self._on_log,
            "error": self._on_error,
            "proc": self._on_proc,
            "run_end": self._on_run_end,
        }

    # -- folding -----------------------------------------------------------------
    def apply(self, event: Event) -> None:
        self.events += 1
        if event.t > self.last_t:
            self.last_t = event.t
        self._dispatch[event.kind](event)

    def apply_all(self, events: Iterable[Event]) -> "SessionState":
        apply = self.apply
        for e in events:
            apply(e)
        return self

    def run(self, label: str) -> RunState:
        r = self.runs.get(label)
        if r is None:
            r = self.runs[label] = RunState(label)
        return r

    def _touch(self, run: RunState, t: float) -> None:
        run.version += 1
        if run.first_t is None:
            run.first_t = t
        if t > run.last_t:
            run.last_t = t

    def _on_session(self, e: SessionHeader) -> None:
        if self.header is None:
            self.header = e
            self.gpu.interval_s = e.gpu_interval_s

    def _on_run_start(self, e: RunStart) -> None:
        r = self.run(e.run)
        r.info = e
        self._touch(r, e.t)

    def _on_phase(self, e: Phase) -> None:
        r = self.run(e.run)
        self._touch(r, e.t)
        key = (e.step, e.name)
        if e.edge == "start":
            span = PhaseSpan(e.run, e.step, e.name, e.t, detail=e.detail)
            r.open_phases[key] = span
            r.timeline.append(span)
            r.step_state(e.step).phases[e.name] = span
        else:
            span = r.open_phases.pop(key, None)
            if span is None:  # end without start (file cut at the front): zero-length span
                span = PhaseSpan(e.run, e.step, e.name, e.t)
                r.timeline.append(span)
                r.step_state(e.step).phases[e.name] = span
            span.end = e.t
            span.ok = e.ok
            if e.detail:
                span.detail = e.detail
            if e.data:
                span.data = e.data

    def _on_request(self, e: Request) -> None:
        r = self.run(e.run)
        self._touch(r, e.t)
        r.step_state(e.step).requests.append(e)

    def _on_gpu(self, e: GpuSample) -> None:
        g = self.gpu
        g.samples += 1
        if e.error:
            g.error = e.error
            return
        g.error = ""
        t = e.t
        used_now: dict[int, float] = {}
        for d in e.devices:
            idx = d.get("index", 0)
            dev = g.devices.get(idx)
            if dev is None:
                dev = g.devices[idx] = DeviceSeries(idx, d.get("name", ""), d.get("total_mib") or 0.0)
            used = d.get("used_mib")
            if used is not None:
                dev.used.append(t, used)
                used_now[idx] = used
            util = d.get("util")
            if util is not None:
                dev.util.append(t, util)
        g.processes = e.processes
        for run in self.runs.values():
            if run.info is not None and run.end is None:
                wanted = run.info.gpus or used_now.keys()
                if wanted and all(i in used_now for i in wanted):
                    run.device_mem.append(t, float(sum(used_now[i] for i in wanted)))
        if e.processes:
            # The engine's share: its own process groups (`role` engine, sessions from 2026-12-03 on); in older
            # sessions the run's processes minus the runner (which hosts the simulated trainer). The
            # megatron trainer's processes (`role` trainer) are a share of their own.
            per_run: dict[str, float] = {}
            per_trainer: dict[str, float] = {}
            for p in e.processes:
                run = self.runs.get(p.get("run", ""))
                if run is None or run.info is None:
                    continue
                role, used = p.get("role"), p.get("used_mib") or 0.0
                if role == "trainer":
                    per_trainer[run.label] = per_trainer.get(run.label, 0.0) + used
                elif role == "engine" or (role is None and p.get("pid") != run.info.pid):
                    per_run[run.label] = per_run.get(run.label, 0.0) + used
            for run in self.runs.values():
                if run.info is not None and run.end is None:
                    run.engine_mem.append(t, per_run.get(run.label, 0.0))
                    if run.label in per_trainer or run.trainer_mem.v:
                        run.trainer_mem.append(t, per_trainer.get(run.label, 0.0))

    def _on_engine(self, e: EngineGauges) -> None:
        r = self.run(e.run)
        self._touch(r, e.t)
        st = r.step_state(e.step)
        st.engine_gauges += 1
        cap = e.gauges.get("kv_capacity_tokens")
        if st.kv_capacity is None and isinstance(cap, (int, float)):
            st.kv_capacity = float(cap)
        for name, value in e.gauges.items():
            if isinstance(value, (int, float)):
                s = r.engine.get(name)
                if s is None:
                    s = r.engine[name] = Series()
                s.append(e.t, value)

    def _on_train(self, e: Train) -> None:
        r = self.run(e.run)
        self._touch(r, e.t)
        r.step_state(e.step).train = e

    def _on_log(self, e: Log) -> None:
        if not e.run:
            return
        r = self.run(e.run)
        r.logs.append(e)
        r.log_count += 1
        r.version += 1

    def _on_error(self, e: Error) -> None:
        r = self.run(e.run or "session")
        self._touch(r, e.t)
        r.errors.append(e)

    def _on_proc(self, e: Proc) -> None:
        r = self.run(e.run)
        self._touch(r, e.t)
        r.procs[e.pgid] = e

    def _on_gpu_sample(self, e: GpuSample) -> None:
        self._on_gpu(e)
        if e.error or not e.processes:
            return
        h = self.gpu.host
        h.gpu_seen = True
        foreign = []
        for p in e.processes:
            if p.get("run", "other") == "other":
                foreign.append((p.get("device", 0), p.get("used_mib") or 0.0, p.get("pid")))
            else:
                h.gpu_mapped = True
                h.owned_pids.add(p.get("pid"))
        if foreign:
            h.gpu_foreign_t.append(e.t)
            h.gpu_foreign.append(tuple(foreign))

    def _on_host(self, e: HostSample) -> None:
        h = self.gpu.host
        if e.error:
            h.error = e.error
            return
        own = sum(v for v in e.own.values() if isinstance(v, (int, float)))
        h.starts.append(e.t - e.window)
        h.foreign.append(e.t, max(0.0, e.busy_cores - own))
        h.own.append(e.own)
        h.cores = e.cores
        h.samples += 1

    def _on_run_end(self, e: RunEnd) -> None:
        r = self.run(e.run)
        self._touch(r, e.t)
        r.end = e
        r.status = e.status
        for span in r.open_phases.values():  # phases the run never closed end with it
            span.end = e.t
            span.ok = False
        r.open_phases.clear()

    # -- derived ---------------------------------------------------------------------
    def summary(self, label: str) -> "RunSummary":
        return run_summary(self.runs[label], self.gpu)


# ---- request metrics (vllm bench serve definitions) ------------------------------------


@dataclass(frozen=True)
class RequestMetrics:
    """Flat metrics over a set of requests, named like `vllm bench serve`'s result JSON."""

    completed: int = 0
    errors: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    duration_s: float = 0.0
    request_throughput: float = 0.0
    output_throughput: float = 0.0
    total_token_throughput: float = 0.0
    mean_ttft_ms: float = 0.0
    median_ttft_ms: float = 0.0
    std_ttft_ms: float = 0.0
    p50_ttft_ms: float = 0.0
    p90_ttft_ms: float = 0.0
    p99_ttft_ms: float = 0.0
    mean_tpot_ms: float = 0.0
    median_tpot_ms: float = 0.0
    std_tpot_ms: float = 0.0
    p50_tpot_ms: float = 0.0
    p90_tpot_ms: float = 0.0
    p99_tpot_ms: float = 0.0
    mean_itl_ms: float = 0.0
    median_itl_ms: float = 0.0
    std_itl_ms: float = 0.0
    p50_itl_ms: float = 0.0
    p90_itl_ms: float = 0.0
    p99_itl_ms: float = 0.0
    mean_e2el_ms: float = 0.0
    median_e2el_ms: float = 0.0
    std_e2el_ms: float = 0.0
    p50_e2el_ms: float = 0.0
    p90_e2el_ms: float = 0.0
    p99_e2el_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Dist:
    """One metric's values over a set of requests, in ms, reduced once: what its mean, std and
    percentiles need, alone or pooled with other sets (a run pools its steps')."""

    values: array  # ascending
    total: tuple[float, ...]  # exact sum of the values (`stats.exact_sum`)
    std: float  # population std of this set alone

    @property
    def n(self) -> int:
        return len(self.values)


def dist_ms(seconds: Iterable[float]) -> Dist:
    """Reduce one metric's values (seconds) to a `Dist` in ms. Each value becomes `x * 1000.0` first, so
    mean, std and percentiles are over the same ms floats as when all values were converted at once."""
    ms = list(map(mul, seconds, repeat(1000.0)))
    total = stats.exact_sum(ms)
    std = stats.pooled_stdev((ms,), len(ms), math.fsum(total) / len(ms)) if ms else 0.0
    ms.sort()
    return Dist(array("d", ms), total, std)


def _dist_fields(prefix: str, dists: Sequence[Dist]) -> dict[str, float]:
    """The mean/median/std/p50/p90/p99 fields of one metric over the union of `dists`."""
    n = sum(d.n for d in dists)
    mean = math.fsum(chain.from_iterable(d.total for d in dists)) / n if n else 0.0
    if len(dists) == 1:
        std = dists[0].std
    else:
        std = stats.pooled_stdev((d.values for d in dists), n, mean)
    p50, p90, p99 = stats.pooled_percentiles([d.values for d in dists], PERCENTILES)
    return {
        f"mean_{prefix}_ms": mean,
        f"median_{prefix}_ms": p50,
        f"std_{prefix}_ms": std,
        f"p50_{prefix}_ms": p50,
        f"p90_{prefix}_ms": p90,
        f"p99_{prefix}_ms": p99,
    }


@dataclass(frozen=True, slots=True)
class RequestStats:
    """A set of requests reduced once (counts, token sums, one `Dist` per latency metric): enough to
    give its `RequestMetrics` for any duration, alone or pooled with other sets."""

    completed: int
    errors: int
    input_tokens: int
    output_tokens: int
    ttft: Dist
    tpot: Dist
    itl: Dist
    e2el: Dist


def request_stats(requests: Sequence[Request]) -> RequestStats:
    """Failed requests count only as errors; TPOT only for requests with more than one output token."""
    ok = [r for r in requests if not r.error]
    multi = [r for r in ok if r.output_tokens > 1]
    return RequestStats(
        completed=len(ok),
        errors=len(requests) - len(ok),
        input_tokens=sum(r.prompt_tokens for r in ok),
        output_tokens=sum(r.output_tokens for r in ok),
        ttft=dist_ms(r.ttft for r in ok),
        tpot=dist_ms((r.latency - r.ttft) / (r.output_tokens - 1) for r in multi),
        itl=dist_ms(chain.from_iterable(r.itl for r in ok)),
        e2el=dist_ms(r.latency for r in ok),
    )


def pooled_metrics(sets: Sequence[RequestStats], duration_s: float) -> RequestMetrics:
    """Metrics of the union of request sets over `duration_s`: exactly what `calculate_metrics` gives for
    all their requests at once (counts add, exact sums add, percentiles select from the sorted sets)."""
    completed = sum(s.completed for s in sets)
    total_in = sum(s.input_tokens for s in sets)
    total_out = sum(s.output_tokens for s in sets)
    dur = duration_s if duration_s > 0 else 0.0
    return RequestMetrics(
        completed=completed,
        errors=sum(s.errors for s in sets),
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        duration_s=dur,
        request_throughput=completed / dur if dur else 0.0,
        output_throughput=total_out / dur if dur else 0.0,
        total_token_throughput=(total_in + total_out) / dur if dur else 0.0,
        **_dist_fields("ttft", [s.ttft for s in sets]),
        **_dist_fields("tpot", [s.tpot for s in sets]),
        **_dist_fields("itl", [s.itl for s in sets]),
        **_dist_fields("e2el", [s.e2el for s in sets]),
    )


def calculate_metrics(requests: Iterable[Request], duration_s: float) -> RequestMetrics:
    """One pure function from request records to metrics, as vLLM's benchmark does it."""
    return pooled_metrics([request_stats(list(requests))], duration_s)


# ---- per step / per run ---------------------------------------------------------------------


@dataclass(frozen=True)
class StepSummary:
    step: int
    metrics: RequestMetrics
    phases: dict[str, float]  # finished phase durations, seconds
    failed_phases: tuple[str, ...]
    transition_s: float | None  # offload + reload + weight_sync (None until any of them ran)
    train_s: float | None
    total_s: float | None  # wall clock from the step's first phase start to its last phase end
    complete: bool  # every step phase that started has ended
    loss: float | None = None  # None for the simulated trainer: it computes no loss, and 0.0 would read as one
    train_tokens: int = 0
    simulated_train: bool = False
    train_parts: dict[str, float] = field(default_factory=dict)  # the train phase by part (Train.parts)
    mismatch: dict[str, float] = field(default_factory=dict)  # train/rollout logprob mismatch (Train.mismatch)
    #: a full-weight sync's numbers (the weight_sync phase's data: bytes, gbps, transfer_s, paused_s, ...)
    sync: dict = field(default_factory=dict)
    drift: StepDrift | None = None  # foreign load during the step (sgtui.drift flags it); None: no witness

    @property
    def full(self) -> bool:
        """A step sample: every phase of a step ran and ended ok. A cancelled or failed run's last step
        (rollout cut short, later phases missing or ended ok=false) is short because it was cut, not fast,
        so it must not pull a run's mean step time down (issue 13)."""
        if not self.complete or self.total_s is None or self.failed_phases:
            return False
        names = self.phases.keys()
        swapped = "restart" in names or ("offload" in names and "reload" in names)  # restart: older sessions
        return swapped and all(p in names for p in FULL_STEP_PHASES)


#: Phases every full step has besides offload + reload (or the `restart` that stood in for both).
FULL_STEP_PHASES = ("rollout", "train", "weight_sync")


def rollout_duration(step: StepState) -> float:
    """Rollout wall time; falls back to first send..last finish when the phase is missing or open."""
    span = step.phases.get("rollout")
    if span is not None and span.end is not None:
        return span.end - span.start
    if step.requests:
        return max(r.t for r in step.requests) - min(r.start for r in step.requests)
    return 0.0


def step_request_stats(step: StepState) -> RequestStats:
    """The step's requests reduced, computed once per request count: a finished step's are final, so
    every later summary of the run pools them instead of going over their values again."""
    n = len(step.requests)
    cached = step._cache.get("requests")
    if cached is None or cached[0] != n:
        cached = step._cache["requests"] = (n, request_stats(step.requests))
    return cached[1]


def step_metrics(step: StepState) -> RequestMetrics:
    """The step's request metrics over its rollout time, kept while neither the requests nor the time change."""
    key = (len(step.requests), rollout_duration(step))
    cached = step._cache.get("metrics")
    if cached is None or cached[0] != key:
        cached = step._cache["metrics"] = (key, pooled_metrics([step_request_stats(step)], key[1]))
    return cached[1]


def step_summary(step: StepState, drift: StepDrift | None = None) -> StepSummary:
    phases: dict[str, float] = {}
    failed = []
    starts, ends = [], []
    complete = True
    for name, span in step.phases.items():
        starts.append(span.start)
        if span.end is None:
            complete = False
            continue
        ends.append(span.end)
        phases[name] = span.end - span.start
        if not span.ok:
            failed.append(name)
    transition = [phases[p] for p in TRANSITION_PHASES if p in phases]
    # A `restart` phase stands in for offload+reload when a strategy restarts in one go.
    if "restart" in phases and not any(p in phases for p in ("offload", "reload")):
        transition.append(phases["restart"])
    total = (max(ends) - min(starts)) if (ends and complete and starts) else None
    return StepSummary(
        step=step.step,
        metrics=step_metrics(step),
        phases=phases,
        failed_phases=tuple(failed),
        transition_s=sum(transition) if transition else None,
        train_s=phases.get("train"),
        total_s=total,
        complete=complete,
        loss=step.train.loss if step.train and not step.train.simulated else None,
        train_tokens=step.train.tokens if step.train else 0,
        simulated_train=bool(step.train and step.train.simulated),
        train_parts=dict(step.train.parts) if step.train else {},
        mismatch=dict(step.train.mismatch) if step.train else {},
        sync=dict(ws.data) if (ws := step.phases.get("weight_sync")) is not None and ws.ok else {},
        drift=drift,
    )


# ---- GPU memory ledger -------------------------------------------------------------------------------
# One definition per number, the same in every report (issue 13 found "held" meaning the engine's processes
# in one branch and device memory above the idle floor in another). Engine columns (`freed_mib`, `held_mib`,
# `engine_*`) are the engine's own processes: NVML per-process memory of the run's processes with role
# `engine` (older sessions: the run's processes other than the runner). A device-level number counts whatever
# else allocated meanwhile: in the H200 training sessions of 2026-12-03 the devices held 12,400-25,200 MiB
# above the idle floor after offload while the engines' processes held 1,530-2,780 MiB (the rest: the
# trainer's rank, 8,972 MiB even through the 1B rollouts, then unattributed). Device columns (`device_*`,
# before/after offload, train floor/peak, peak) are the run's GPUs' used memory summed within one sample
# (every process on them): the second column, "above the idle floor" where the floor (used before the run
# started) is subtracted. Trainer columns are the trainer's processes (role `trainer`), apart from both.


#: What each ledger number is, in the words every report prints (text, Markdown, JSON).
MEMORY_DEFINITIONS = {
    "held": "the engine's own processes (NVML per process) after offload",
    "freed": "the engine's own processes, just before offload minus just after",
    "device_held": "every process on the run's GPUs, above the idle floor before the run",
    "peak": "most used at once on the run's GPUs (highest per-sample sum)",
    "trainer": "the trainer's processes (NVML, role trainer), most held during rollout",
}


@dataclass(frozen=True)
class MemoryStep:
    """One offload in the ledger. Engine columns are None where NVML maps no process to the run (another
    PID namespace, or no per-process samples): then only the device columns are measured."""

    step: int
    before_offload_mib: float | None  # device: used just before offload began (sum over the run's GPUs)
    after_offload_mib: float | None  # device: first sample after offload ended (and before train ended)
    freed_mib: float | None  # engine processes: just before offload minus first sample after it
    held_mib: float | None  # engine processes: still theirs in the first sample after offload
    train_floor_mib: float | None  # device: least used at once during train
    train_peak_mib: float | None  # device: most used at once during train
    #: the megatron trainer's own processes (NVML, by role): most held during the step's rollout (what it
    #: keeps on the GPU while offloaded) and during its train phase; None without per-process samples
    trainer_rollout_mib: float | None = None
    trainer_train_mib: float | None = None
    engine_before_mib: float | None = None  # engine processes just before offload (what freed_share divides)
    device_freed_mib: float | None = None  # device: before_offload_mib - after_offload_mib
    device_held_mib: float | None = None  # device: after_offload_mib - the idle floor before the run

    @property
    def freed_share(self) -> float | None:
        """Share of the engine's memory the offload gave back (0..1); None unmeasured or for an empty engine."""
        if self.freed_mib is None or not self.engine_before_mib or self.engine_before_mib <= 0:
            return None
        return self.freed_mib / self.engine_before_mib


@dataclass(frozen=True)
class MemorySummary:
    measured: bool  # False: no GPU samples (CPU machine or NVML unavailable)
    reason: str  # why not measured, shown instead of zeros
    devices: tuple[int, ...]
    idle_floor_mib: float | None  # device: used on the run's GPUs before the run started
    peak_mib: float | None  # device: the most used at once (highest per-sample sum over the run's GPUs)
    steps: tuple[MemoryStep, ...]
    mean_freed_mib: float | None  # engine processes, mean over steps
    mean_held_mib: float | None  # engine processes, mean over steps: "held after offload"
    #: "engine processes": NVML mapped the engine's processes, so the engine columns are measured; "device":
    #: it did not, and only the device columns are (freed/held are None, never a device number in disguise)
    source: str = "device"
    device_mean_freed_mib: float | None = None  # device, mean over steps
    device_mean_held_mib: float | None = None  # device above the idle floor after offload, mean over steps
    engine_peak_mib: float | None = None  # engine processes: the most they held at once
    trainer_peak_mib: float | None = None  # trainer processes (role trainer): the most they held at once
    trainer_mean_rollout_mib: float | None = None  # trainer processes during rollouts (offloaded), mean over steps
    sample_interval_s: float | None = None  # seconds between GPU samples (session header); None: not recorded


def _sum_devices(devs: list[DeviceSeries], pick) -> float | None:
    vals = [pick(d.used) for d in devs]
    if any(v is None for v in vals) or not vals:
        return None
    return float(sum(vals))  # type: ignore[arg-type]


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return stats.mean(vals) if vals else None


def memory_summary(run: RunState, gpu: GpuState) -> MemorySummary:
    """The ledger: per offload, what the engine's processes freed and still held, and the same at device level,
    from the sampled series (not per-step snapshots). Definitions: the comment above `MemoryStep`."""
    interval = gpu.interval_s or None
    if not gpu.devices:
        reason = gpu.error or "no GPU samples"
        if run.info is not None and run.info.device == "cpu":
            reason = "not measurable on CPU"
        return MemorySummary(False, reason, (), None, None, (), None, None, sample_interval_s=interval)
    wanted = tuple(run.info.gpus) if run.info and run.info.gpus else tuple(sorted(gpu.devices))
    devs = [gpu.devices[i] for i in wanted if i in gpu.devices]
    if not devs:
        return MemorySummary(False, f"no samples for GPUs {list(wanted)}", wanted, None, None, (), None, None,
                             sample_interval_s=interval)
    start = run.first_t or 0.0
    idle = _sum_devices(devs, lambda s: s.before(start))
    dev = run.device_mem  # sampled only while the run was live: its values are the run's
    per_process = any(v > 0 for v in run.engine_mem.v)
    mem_steps = []
    for n in run.rl_steps:
        st = run.steps[n]
        off = st.phases.get("offload") or st.phases.get("restart")
        train = st.phases.get("train")
        before = after = freed = held = e_before = d_freed = d_held = floor = tpeak = None
        if off is not None and off.end is not None:
            limit = train.end if train is not None and train.end is not None else None
            before = dev.before(off.start)
            after = dev.at_or_after(off.end, limit)
            if before is not None and after is not None:
                d_freed = before - after
            if after is not None and idle is not None:
                d_held = after - idle
            if per_process:
                e_before = run.engine_mem.before(off.start)
                e_after = run.engine_mem.at_or_after(off.end, limit)
                if e_before is not None and e_after is not None:
                    freed, held = e_before - e_after, e_after
        t_roll = t_train = None
        if train is not None and train.end is not None:
            during = dev.window(train.start, train.end)
            if during:
                floor, tpeak = min(during), max(during)
            t_train = max(run.trainer_mem.window(train.start, train.end), default=None)
        roll = st.phases.get("rollout")
        if roll is not None and roll.end is not None:
            t_roll = max(run.trainer_mem.window(roll.start, roll.end), default=None)
        mem_steps.append(MemoryStep(n, before, after, freed, held, floor, tpeak, t_roll, t_train,
                                    e_before, d_freed, d_held))
    return MemorySummary(
        True,
        "",
        wanted,
        idle,
        max(dev.v, default=None),
        tuple(mem_steps),
        _mean(m.freed_mib for m in mem_steps),
        _mean(m.held_mib for m in mem_steps),
        "engine processes" if per_process else "device",
        device_mean_freed_mib=_mean(m.device_freed_mib for m in mem_steps),
        device_mean_held_mib=_mean(m.device_held_mib for m in mem_steps),
        engine_peak_mib=max(run.engine_mem.v) if per_process else None,
        trainer_peak_mib=max(run.trainer_mem.v, default=None),
        trainer_mean_rollout_mib=_mean(m.trainer_rollout_mib for m in mem_steps),
        sample_interval_s=interval,
    )


#: How sgtui's vLLM engine described an in-place adapter load in the weight_sync phase until 2026-11-29.
#: vLLM re-reads such an adapter from disk whenever it activates it, so those runs decode slower after
#: their first sync than the engine does (sgtui/runner/engines/vllm.py); reports say so for old sessions.
INPLACE_SYNC_DETAIL = "(in place)"


@dataclass(frozen=True)
class RunSummary:
    label: str
    backend: str
    strategy: str
    status: str
    steps: tuple[StepSummary, ...]  # RL steps only (1..N), in order
    metrics: RequestMetrics  # pooled over every RL step's requests, duration = summed rollout time
    startup_s: float | None
    warmup_s: float | None
    phase_means: dict[str, float]  # mean duration per phase over completed steps
    phase_samples: dict[str, tuple[float, ...]]  # per-step values: the noise the verdict uses
    memory: MemorySummary
    errors: tuple[Error, ...]
    engine_cpu_in_train: float | None = None  # cores the engine's processes used while the trainer ran
    inplace_lora_sync: bool = False  # vLLM adapters hot-loaded with load_inplace (sessions before 2026-11-29)
    train_parts: dict[str, float] = field(default_factory=dict)  # mean seconds per part of train (Train.parts)
    trainer_start_s: float | None = None  # the persistent trainer's one launch (torchrun to ready)
    #: logprob mismatch per step as measured (mean_abs, max_abs, k3): each step scores the adapter its
    #: rollout was served with, so step 1 shows the engine's numerics alone and later steps the sync too
    mismatch_steps: tuple[tuple[int, dict[str, float]], ...] = ()
    #: the steps behind phase_means/phase_samples/train_parts (the steady state): full steps after step 1,
    #: whose one-off costs (first LoRA batch, CUDA set-up, cold caches) are not what every later step pays;
    #: step 1 only when no later step is full, or with --include-first-step
    steady_steps: tuple[int, ...] = ()
    first_step_included: bool = False  # step 1 is among steady_steps (asked for, or the only full step)
    profile: RunProfile | None = None  # what the run ran on and with, for `compare.differences`
    #: the engine's KV-cache capacity (tokens) as first read in each step that reported it, (step, tokens):
    #: the first is the capacity at start (step 1's rollout, before any offload), later ones after wake-ups
    kv_capacity_steps: tuple[tuple[int, float], ...] = ()
    #: per RL step, its successful multi-token requests' TPOT (ms, ascending): decode speed per request, the
    #: samples `findings` compares before and after the first weight sync
    step_tpot_ms: tuple[tuple[int, tuple[float, ...]], ...] = ()
    first_sync_step: int | None = None  # the first step whose weight sync ran and ended ok (None: never synced)
    #: a full-weight sync's numbers, mean over the steady steps (bytes, gbps, transfer_s, produce_s, load_s,
    #: paused_s); setup_s is the run's one-off set-up wherever it was paid; {} for LoRA and restart syncs
    sync: dict[str, float] = field(default_factory=dict)
    #: RL steps whose requests all asked for the base model (the served name, no adapter): sessions older than
    #: the runner of 2026-11-28 rolled step 1 of a restart sync out on it, and LoRA decode is slower than that
    base_model_steps: tuple[int, ...] = ()

    @property
    def mismatch(self) -> dict[str, float]:
        """Mean over steps of mean_abs and k3, max over steps of max_abs; {} when not measured."""
        ms = [m for _, m in self.mismatch_steps]
        if not ms:
            return {}
        return {"mean_abs": stats.mean([m["mean_abs"] for m in ms]), "max_abs": max(m["max_abs"] for m in ms),
                "k3": stats.mean([m["k3"] for m in ms]), "tokens": sum(m.get("tokens", 0) for m in ms)}

    @property
    def completed_steps(self) -> tuple[StepSummary, ...]:
        """Full, successful steps (`StepSummary.full`), the first step included."""
        return tuple(s for s in self.steps if s.full)

    @property
    def first_step(self) -> StepSummary | None:
        """Step 1, shown apart from the steady state when it is full and later steps are too."""
        return next((s for s in self.steps if s.step == 1 and s.full), None)

    @property
    def steady_label(self) -> str:
        """Which steps the means are over, as reports say it: "steps 2-4", "step 1 only", "steps 1-3"."""
        st = self.steady_steps
        if not st:
            return "no full step"
        span = f"step {st[0]}" if len(st) == 1 else (f"steps {st[0]}-{st[-1]}" if st[-1] - st[0] == len(st) - 1
                                                      else "steps " + ",".join(map(str, st)))
        return span + (" only" if st == (1,) else "")


def mean_parts(parts: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each part over the steps that report it, in the order the parts first appear."""
    keys = list(dict.fromkeys(k for p in parts for k in p))
    return {k: stats.mean([p[k] for p in parts if k in p]) for k in keys}


#: Numbers of a full-weight sync averaged over steps (Phase.data of weight_sync: sgtui/runner/weights.py).
SYNC_NUMBERS = ("bytes", "buckets", "transfer_s", "gbps", "produce_s", "load_s", "paused_s")


def sync_summary(steady: list[dict], every: list[dict]) -> dict[str, float]:
    """Mean of each full-sync number over the steady steps' syncs; setup_s (paid once, in the run's first sync,
    which is usually not a steady step) from whichever step carries it. {} without full syncs."""
    syncs = [d for d in steady if d.get("bytes")]
    out = {k: stats.mean([float(d[k]) for d in syncs if k in d]) for k in SYNC_NUMBERS
           if any(k in d for d in syncs)}
    setup = [float(d["setup_s"]) for d in every if "setup_s" in d]
    if out and setup:
        out["setup_s"] = setup[0]
    return out


def steady_steps(steps: Sequence[StepSummary], include_first_step: bool = False) -> tuple[StepSummary, ...]:
    """The steps a run's means and the verdict's samples are over: full steps, step 1 left out while a later
    step is full (unless asked for). A 1-step run keeps its one step, and says so (`steady_label`)."""
    full = [s for s in steps if s.full]
    later = [s for s in full if s.step > 1]
    return tuple(full if include_first_step or not later else later)


def step_models(step: StepState) -> frozenset[str]:
    """The models the step's successful requests asked for, kept until its next request."""
    n = len(step.requests)
    cached = step._cache.get("models")
    if cached is None or cached[0] != n:
        cached = step._cache["models"] = (n, frozenset(r.model for r in step.requests if not r.error))
    return cached[1]


def first_sync_step(run: RunState) -> int | None:
    """The first RL step whose weight sync ran and ended ok; a `none` sync (the control) syncs nothing."""
    for n in run.rl_steps:
        sp = run.steps[n].phases.get("weight_sync")
        if sp is not None and sp.end is not None and sp.ok and not (sp.detail or "").startswith("none"):
            return n
    return None


def run_devices(run: RunState) -> tuple[int, ...]:
    """The GPUs a run's engine and trainer use (empty: not known, or CPU)."""
    if run.info is None:
        return ()
    train = run.info.config.get("train_gpus") if isinstance(run.info.config, dict) else None
    return tuple(sorted(set(run.info.gpus) | set(train if isinstance(train, list) else ())))


def run_summary(run: RunState, gpu: GpuState, include_first_step: bool = False) -> RunSummary:
    """Everything the table, the reports and the verdict show about one run. Cached by run version."""
    key = (run.version, gpu.samples, include_first_step, gpu.host.samples)
    cached = run._cache.get("summary")
    if cached is not None and cached[0] == key:
        return cached[1]
    devices = run_devices(run)
    steps = tuple(step_summary(run.steps[n], step_drift(run.steps[n], gpu, devices, run.last_t, run.label))
                  for n in run.rl_steps)
    request_sets = [step_request_stats(run.steps[n]) for n in run.rl_steps]
    rollout_total = sum(rollout_duration(run.steps[n]) for n in run.rl_steps)
    steady = steady_steps(steps, include_first_step)
    samples: dict[str, list[float]] = {}
    for s in steady:
        for name in STEP_PHASES + ("restart",):
            if name in s.phases:
                samples.setdefault(name, []).append(s.phases[name])
        if s.transition_s is not None:
            samples.setdefault("transition", []).append(s.transition_s)
        if s.total_s is not None:
            samples.setdefault("step_total", []).append(s.total_s)
        if s.metrics.output_throughput:
            samples.setdefault("output_throughput", []).append(s.metrics.output_throughput)
        if s.metrics.completed:
            samples.setdefault("mean_ttft_ms", []).append(s.metrics.mean_ttft_ms)
            samples.setdefault("mean_itl_ms", []).append(s.metrics.mean_itl_ms)
            samples.setdefault("mean_tpot_ms", []).append(s.metrics.mean_tpot_ms)
            samples.setdefault("p99_e2el_ms", []).append(s.metrics.p99_e2el_ms)
    step0 = run.steps.get(0)
    startup = step0.phases.get("startup") if step0 else None
    warmup = step0.phases.get("warmup") if step0 else None
    trainer_start = step0.phases.get("trainer_start") if step0 else None
    info = run.info
    summary = RunSummary(
        label=run.label,
        backend=info.backend if info else "",
        strategy=info.strategy if info else "",
        status=run.status,
        steps=steps,
        metrics=pooled_metrics(request_sets, rollout_total),
        startup_s=startup.duration if startup else None,
        warmup_s=warmup.duration if warmup else None,
        phase_means={k: stats.mean(v) for k, v in samples.items()},
        phase_samples={k: tuple(v) for k, v in samples.items()},
        memory=memory_summary(run, gpu),
        errors=tuple(run.errors),
        engine_cpu_in_train=stats.mean(cpu.v) if (cpu := run.engine.get("cpu_in_train")) and cpu.v else None,
        train_parts=mean_parts([s.train_parts for s in steady if s.train_parts]),
        trainer_start_s=trainer_start.duration if trainer_start else None,
        mismatch_steps=tuple((s.step, s.mismatch) for s in steps if s.mismatch.get("tokens")),
        inplace_lora_sync=any(INPLACE_SYNC_DETAIL in (sp.detail or "") for st in run.steps.values()
                              if (sp := st.phases.get("weight_sync")) is not None),
        steady_steps=tuple(s.step for s in steady),
        first_step_included=any(s.step == 1 for s in steady),
        profile=compare.run_profile(run.label, info, {i: d.name for i, d in gpu.devices.items() if d.name}),
        kv_capacity_steps=tuple((n, st.kv_capacity) for n, st in sorted(run.steps.items())
                                if st.kv_capacity is not None),
        step_tpot_ms=tuple((n, tuple(v)) for n, sets in zip(run.rl_steps, request_sets) if (v := sets.tpot.values)),
        first_sync_step=first_sync_step(run),
        sync=sync_summary([s.sync for s in steady], [ws.data for st in run.steps.values()
                                                     if (ws := st.phases.get("weight_sync")) is not None and ws.ok]),
        base_model_steps=tuple(n for n in run.rl_steps if step_models(run.steps[n]) == {
            (info.config.get("served_model_name") if info else None) or "policy"}),
    )
    run._cache["summary"] = (key, summary)
    return summary


def load_state(events: Iterable[Event], source: str = "") -> SessionState:
    return SessionState(source).apply_all(events)
