"""Fold events into per-run, per-step state; derive every number shown anywhere.

One job per module, each floor importing only the ones below it:
- `fold`: `SessionFold.apply(event)`, the only place in sgtui that folds events (live and replay both
  feed it, so both show the same numbers), and the state it builds (runs, steps, phases, series);
- `metrics`: request metrics with `vllm bench serve`'s definitions, pure functions of request records;
- `bulk`: the same reductions for large value sets with numpy (imported on first use), bit for bit;
- `steps`: a step's summary, request metrics and foreign load (drift);
- `memory`: the GPU memory ledger of a run;
- `summaries`: a run's summary (`run_summary`), what the table, the reports and the verdict show;
- `session`: `SessionState`, the fold as callers hold it (`summary(label)` one call away), and `load_state`;
- `freeze`: copies of a run's state that another thread may read while the fold goes on.

Every public name is re-exported here: `from sgtui.state import X` is the way in.
"""

from sgtui.state.fold import (
    LOG_LINES_KEPT,
    DeviceSeries,
    GpuState,
    HostState,
    PhaseSpan,
    RunState,
    Series,
    SessionFold,
    StepState,
)
from sgtui.state.freeze import freeze_gpu, freeze_run
from sgtui.state.memory import MEMORY_DEFINITIONS, MemoryStep, MemorySummary, memory_summary
from sgtui.state.metrics import (
    PERCENTILES,
    Dist,
    RequestMetrics,
    RequestStats,
    calculate_metrics,
    dist_ms,
    pooled_metrics,
    request_stats,
    request_stats_many,
)
from sgtui.state.session import SessionState, load_state
from sgtui.state.steps import (
    FULL_STEP_PHASES,
    TRANSITION_PHASES,
    StepDrift,
    StepSummary,
    TailStep,
    adopt_reductions,
    reduce_steps,
    reduce_tail,
    unpack_tail,
    rollout_duration,
    step_drift,
    step_metrics,
    step_models,
    step_request_stats,
    step_summary,
)
from sgtui.state.summaries import (
    INPLACE_SYNC_DETAIL,
    SYNC_NUMBERS,
    RunSummary,
    first_sync_step,
    mean_parts,
    run_devices,
    run_summary,
    steady_steps,
    sync_summary,
)

__all__ = [
    "DeviceSeries", "Dist", "FULL_STEP_PHASES", "GpuState", "HostState", "INPLACE_SYNC_DETAIL",
    "LOG_LINES_KEPT", "MEMORY_DEFINITIONS", "MemoryStep", "MemorySummary", "PERCENTILES", "PhaseSpan",
    "RequestMetrics", "RequestStats", "RunState", "RunSummary", "SYNC_NUMBERS", "Series", "SessionFold",
    "SessionState", "StepDrift", "StepState", "StepSummary", "TRANSITION_PHASES", "TailStep", "adopt_reductions",
    "calculate_metrics",
    "dist_ms", "first_sync_step", "freeze_gpu", "freeze_run", "load_state", "mean_parts", "memory_summary",
    "pooled_metrics", "reduce_steps", "reduce_tail", "request_stats", "request_stats_many", "rollout_duration", "run_devices",
    "run_summary", "steady_steps", "step_drift", "step_metrics", "step_models", "step_request_stats", "step_summary",
    "sync_summary", "unpack_tail",
]
