"""A run's summary: everything the table, the reports and the verdict show about one run.

`run_summary` is a pure function of the folded run and the session's GPU state, cached on the run by its
version: steps come from `sgtui.state.steps`, pooled request metrics from `sgtui.state.metrics`, the memory
ledger from `sgtui.state.memory`. The means and the verdict's samples are over the steady steps (full steps
after step 1, whose one-off costs later steps do not pay).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sgtui import compare, stats
from sgtui.compare import RunProfile
from sgtui.events import STEP_PHASES, Error
from sgtui.state.fold import GpuState, RunState
from sgtui.state.memory import MemorySummary, memory_summary
from sgtui.state.metrics import RequestMetrics, pooled_metrics
from sgtui.state.steps import (
    SAMPLED,
    StepSummary,
    reduce_steps,
    rollout_duration,
    step_drift,
    step_models,
    step_request_stats,
    step_samples,
    step_summary,
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
    reduce_steps([run.steps[n] for n in run.rl_steps])
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
        got = step_samples(run.steps[s.step])
        if got["output_throughput"]:
            samples.setdefault("output_throughput", []).append(got["output_throughput"])
        if step_request_stats(run.steps[s.step]).completed:
            for name in SAMPLED[1:]:
                samples.setdefault(name, []).append(got[name])
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

