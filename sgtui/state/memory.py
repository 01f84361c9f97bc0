"""The GPU memory ledger of a run: per offload, what the engine freed and still held, at two levels.

One definition per number, the same in every report (issue 13 found "held" meaning the engine's processes
in one branch and device memory above the idle floor in another). Engine columns (`freed_mib`, `held_mib`,
`engine_*`) are the engine's own processes: NVML per-process memory of the run's processes with role
`engine` (older sessions: the run's processes other than the runner). A device-level number counts whatever
else allocated meanwhile: in the H200 training sessions of 2026-12-03 the devices held 12,400-25,200 MiB
above the idle floor after offload while the engines' processes held 1,530-2,780 MiB (the rest: the
trainer's rank, 8,972 MiB even through the 1B rollouts, then unattributed). Device columns (`device_*`,
before/after offload, train floor/peak, peak) are the run's GPUs' used memory summed within one sample
(every process on them): the second column, "above the idle floor" where the floor (used before the run
started) is subtracted. Trainer columns are the trainer's processes (role `trainer`), apart from both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from sgtui import stats
from sgtui.state.fold import DeviceSeries, GpuState, RunState


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
    from the sampled series (not per-step snapshots). Definitions: the module docstring."""
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

