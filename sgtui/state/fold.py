"""The fold: events into per-run, per-step state, in order.

`SessionFold.apply(event)` is the only way state changes, and the only place in sgtui that folds events:
the live dashboard feeds it events as the orchestrator reads them, replay feeds it a file, and both
therefore show the same numbers. `apply` only appends, indexes and bumps running counters, O(1) per event
(it runs for every event of a million-event replay); aggregates are computed on demand by pure functions
(`sgtui.state.metrics`, `.steps`, `.summaries`, `.memory`) and cached per run until the run changes.

The running counters (`StepState.requests_completed` ..., `RunState.requests_completed` ...) are what the
dashboard shows every tick (requests done, this step's tok/s); they count exactly as `request_stats` does
(a failed request counts only as an error; output tokens of successful requests only), so the live
numbers agree with the summaries once those are recomputed.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, TypeVar

from sgtui.events import (
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
    #: running counts of the step's requests, kept by `apply` (O(1) per request) so the dashboard reads them
    #: every tick without going over the requests: successful ones, failed ones, and the successful ones'
    #: output tokens (as `request_stats` counts them)
    requests_completed: int = 0
    requests_failed: int = 0
    output_tokens: int = 0


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
    #: running counts over the RL steps (step > 0; warm-up requests are not the benchmark): successful and
    #: failed requests, the sums of its steps' own counts
    requests_completed: int = 0
    requests_failed: int = 0
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
    def rl_steps(self) -> tuple[int, ...]:
        """The RL steps' numbers in order (step 0 holds startup and setup). Kept until a step is added (steps
        are never removed): a run summary asks for them six times and every snapshot once more, each a sort
        of thousands of keys in a long replay."""
        cached = self._cache.get("rl_steps")
        if cached is None or cached[0] != len(self.steps):
            cached = self._cache["rl_steps"] = (len(self.steps), tuple(sorted(s for s in self.steps if s > 0)))
        return cached[1]


_Fold = TypeVar("_Fold", bound="SessionFold")


class SessionFold:
    """Everything known about one session, folded from its events in order. Callers hold its subclass
    `sgtui.state.SessionState`, which adds the runs' summaries (computed from this, so defined above it)."""

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

    def apply_all(self: _Fold, events: Iterable[Event]) -> _Fold:
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

    # The two handlers of ~90% of a long session's events look their run and step up inline (`or`: both are
    # always truthy): two calls fewer an event, ~0.15 s of a 1M-event replay's fold.
    def _on_request(self, e: Request) -> None:
        r = self.runs.get(e.run) or self.run(e.run)
        self._touch(r, e.t)
        st = r.steps.get(e.step) or r.step_state(e.step)
        st.requests.append(e)
        if e.error:
            st.requests_failed += 1
            if e.step > 0:
                r.requests_failed += 1
        else:
            st.requests_completed += 1
            st.output_tokens += e.output_tokens
            if e.step > 0:
                r.requests_completed += 1

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
        r = self.runs.get(e.run) or self.run(e.run)
        self._touch(r, e.t)
        st = r.steps.get(e.step) or r.step_state(e.step)
        st.engine_gauges += 1
        cap = e.gauges.get("kv_capacity_tokens")
        if st.kv_capacity is None and isinstance(cap, (int, float)):
            st.kv_capacity = float(cap)
        t, engine = e.t, r.engine
        for name, value in e.gauges.items():  # ~half of a long replay's events: Series.append inlined
            if isinstance(value, (int, float)):
                s = engine.get(name)
                if s is None:
                    s = engine[name] = Series()
                s.t.append(t)
                s.v.append(value)

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
