"""Per-step derived numbers: a step's summary, its request metrics and the foreign load during it.

A step's requests are reduced once (`step_request_stats`: counts, exact sums, sorted distributions) and
kept on the step until a request is added to it (requests are only ever appended, so a step's numbers stay
valid until its next request); a run's metrics pool its steps' reductions (`pooled_metrics`) instead of
pooling and sorting every ITL value of the run again on each summary.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from typing import Sequence

from sgtui.events import Event, Request
from sgtui.state.fold import GpuState, RunState, StepState
from sgtui.state.metrics import (
    RequestMetrics,
    RequestStats,
    mean_ms,
    own_percentiles,
    pack_stats,
    pooled_metrics,
    request_stats,
    request_stats_many,
    unpack_stats,
)

#: Phases whose time is "transition overhead": the cost of getting the engine
#: out of the trainer's way and back with new weights.
TRANSITION_PHASES = ("offload", "reload", "weight_sync")


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


@dataclass(frozen=True)
class StepSummary:
    step: int
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

    @functools.cached_property
    def metrics(self) -> RequestMetrics:
        """The step's request metrics, computed when first read (`step_metrics`, kept on the step): a run's
        summary needs only a few numbers of each step (`step_samples`), and the spread and percentiles of
        thousands of steps' ITL values were half the time from a replay's last event to settled numbers.
        The step they come from is kept beside the fields (`step_summary`), out of `asdict` and `==`."""
        state = self.__dict__.get("_state")
        return step_metrics(state) if state is not None else RequestMetrics()

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


#: Values (ITL gaps, mostly) `reduce_steps` reduces in one pass: numpy's temporaries stay ~16 MB each.
REDUCE_VALUES = 1 << 21
_ITL = attrgetter("itl")


def reduce_steps(steps: Sequence[StepState]) -> None:
    """Bring the cached reductions of many steps up to date at once (`request_stats_many`): what
    `step_request_stats` gives each, for a fraction of the cost per step (a run summary of thousands of
    steps; the summaries worker during a replay)."""
    stale = [(st, len(st.requests)) for st in steps
             if (c := st._cache.get("requests")) is None or c[0] != len(st.requests)]
    batch: list[tuple[StepState, int]] = []
    size = 0
    for st, n in stale:
        batch.append((st, n))
        size += n + sum(map(len, map(_ITL, islice(st.requests, n))))  # at C speed: a replay's 450k requests
        if size >= REDUCE_VALUES:
            _reduce(batch)
            batch, size = [], 0
    _reduce(batch)


def _reduce(batch: list[tuple[StepState, int]]) -> None:
    """Steps' first n requests reduced together, each step's cache set."""
    if batch:
        for (st, n), reduced in zip(batch, request_stats_many([st.requests[:n] for st, n in batch])):
            st._cache["requests"] = (n, reduced)


#: One step of a session's tail reduced by the helper that decoded it (`sgtui.session_split`): (run, step, index
#: of its first request among the tail's events, how many requests, their reduction; its ITL set without its
#: requests until a step adopts it)
TailStep = tuple[str, int, int, int, RequestStats]


def reduce_tail(events: Sequence[Event]) -> tuple[list[tuple[str, int, int, int]], dict]:
    """Reduce the requests of every RL step among `events` as `reduce_steps` does, in the helper process that
    decoded them (a large session's tail): the replay's own process, folding meanwhile, then only adopts
    them (`adopt_reductions`). Packed for the way back (`unpack_tail`): an ITL set's requests are left out,
    the adopting step puts its own back."""
    found: dict[tuple[str, int], tuple[int, StepState]] = {}
    for i, e in enumerate(events):
        if type(e) is Request and e.step > 0:
            got = found.get((e.run, e.step))
            if got is None:
                got = found[e.run, e.step] = (i, StepState(e.step))
            got[1].requests.append(e)
    reduce_steps([st for _, st in found.values()])
    where = [(run, n, i, st._cache["requests"][0]) for (run, n), (i, st) in found.items()]
    return where, pack_stats([st._cache["requests"][1] for _, st in found.values()])


def unpack_tail(packed: tuple[list[tuple[str, int, int, int]], dict]) -> list[TailStep]:
    """What `reduce_tail` gave, as the steps `adopt_reductions` takes."""
    where, stats = packed
    return [(*w, reduced) for w, reduced in zip(where, unpack_stats(stats))]


def adopt_reductions(runs: dict[str, RunState], tail: list[TailStep], events: Sequence[Event],
                     start: int) -> list[TailStep]:
    """Give each folded step its reduction from `tail` (`reduce_tail` of `events[start:]`) where the step holds
    exactly those requests: as many, its first the very object the helper counted from (a step that began
    before the tail, or a fold that differs, is left to be reduced here). The ones whose step is not folded
    completely yet are given back, to be tried again."""
    later = []
    for run_label, n, i, count, reduced in tail:
        run = runs.get(run_label)
        st = run.steps.get(n) if run is not None else None
        have = len(st.requests) if st is not None else 0
        if have < count and (not have or st.requests[0] is events[start + i]):
            later.append((run_label, n, i, count, reduced))
        elif have == count and st.requests[0] is events[start + i] and \
                ((c := st._cache.get("requests")) is None or c[0] != count):
            if not reduced.itl.kept:
                reduced.itl.requests = [r for r in st.requests if not r.error]
            st._cache["requests"] = (count, reduced)
    return later


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
    summary = StepSummary(
        step=step.step,
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
    object.__setattr__(summary, "_state", step)  # for `metrics`, when read (a frozen dataclass's own attribute)
    return summary


#: The per-step numbers the verdict samples (`run_summary`'s phase_samples), by their `RequestMetrics` names.
SAMPLED = ("output_throughput", "mean_ttft_ms", "mean_itl_ms", "mean_tpot_ms", "p99_e2el_ms")


def step_samples(step: StepState) -> dict[str, float]:
    """Exactly the `SAMPLED` fields of `step_metrics(step)`, without the spread and percentiles of its ITL
    values (what costs): means from the exact sums, the p99 of its ~64 latencies."""
    s = step_request_stats(step)
    dur = rollout_duration(step)
    dur = dur if dur > 0 else 0.0
    return {"output_throughput": s.output_tokens / dur if dur else 0.0, "mean_ttft_ms": mean_ms([s.ttft]),
            "mean_itl_ms": mean_ms([s.itl]), "mean_tpot_ms": mean_ms([s.tpot]),
            "p99_e2el_ms": own_percentiles(s.e2el)[2]}


def step_models(step: StepState) -> frozenset[str]:
    """The models the step's successful requests asked for, kept until its next request."""
    n = len(step.requests)
    cached = step._cache.get("models")
    if cached is None or cached[0] != n:
        cached = step._cache["models"] = (n, frozenset(r.model for r in step.requests if not r.error))
    return cached[1]
