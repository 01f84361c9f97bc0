"""A session's per-step numbers into the trackers RL users already watch: W&B or TensorBoard (`--log-to`).

Contract: `step_rows(summary) -> list[(step, {name: value})]` is pure (one row per RL step, from the same
`RunSummary` every report reads, so a tracker shows the numbers the text report prints), and
`log_session(states, target, directory) -> list[str]` writes one tracker run per sgtui run (named
`<session stem>/<run label>`, x axis = the RL step) and returns where each went. Both trackers are optional
extras (`pip install 'sgtui[wandb]'` / `'sgtui[tensorboard]'`), imported only here and only when asked
for: the core never needs them. Logged after the fact from the session file rather than live from the
orchestrator, so `sgtui report x.jsonl --log-to tensorboard` on an old session gives the same curves as the
live run did, and a tracker that hangs (W&B's service) can never stall a measurement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sgtui.state import RunSummary, SessionState

TARGETS = ("wandb", "tensorboard")
EXTRAS = {"wandb": ("wandb", "sgtui[wandb]"), "tensorboard": ("tensorboardX", "sgtui[tensorboard]")}


class TrackerError(Exception):
    """One line for the user: the tracker is not installed, or refused the run."""


def step_rows(s: RunSummary) -> list[tuple[int, dict[str, float]]]:
    """Per RL step: phase seconds (`phase/<name>_s`, train parts `train/<part>_s`), the rollout's request
    metrics (`rollout/...`, vLLM's names), the logprob mismatch (`mismatch/...`), the full-weight sync's
    numbers (`sync/...`) and the memory ledger's offload (`memory/..._mib`). Only what was measured."""
    mem = {m.step: m for m in s.memory.steps} if s.memory.measured else {}
    rows = []
    for st in s.steps:
        row: dict[str, float] = {f"phase/{k}_s": v for k, v in st.phases.items()}
        if st.total_s is not None:
            row["step/total_s"] = st.total_s
        if st.transition_s is not None:
            row["step/transition_s"] = st.transition_s
        row.update({f"train/{k}_s": v for k, v in st.train_parts.items()})
        if st.loss is not None:
            row["train/loss"] = st.loss
        m = st.metrics
        if m.completed:
            row.update({"rollout/output_throughput": m.output_throughput, "rollout/mean_ttft_ms": m.mean_ttft_ms,
                        "rollout/p99_ttft_ms": m.p99_ttft_ms, "rollout/mean_tpot_ms": m.mean_tpot_ms,
                        "rollout/mean_itl_ms": m.mean_itl_ms, "rollout/completed": float(m.completed),
                        "rollout/errors": float(m.errors)})
        row.update({f"mismatch/{k}": float(v) for k, v in st.mismatch.items() if isinstance(v, (int, float))})
        row.update({f"sync/{k}": float(v) for k, v in st.sync.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
        ms = mem.get(st.step)
        if ms is not None:
            for name in ("freed_mib", "held_mib", "device_held_mib", "train_peak_mib", "trainer_rollout_mib"):
                v = getattr(ms, name)
                if v is not None:
                    row[f"memory/{name}"] = v
        rows.append((st.step, row))
    return rows


def _import(target: str):
    module, extra = EXTRAS[target]
    try:
        return __import__(module)
    except ImportError:
        raise TrackerError(f"--log-to {target}: {module} is not installed (pip install '{extra}')") from None


def log_session(states: Sequence[SessionState], target: str, directory: Path) -> list[str]:
    """Write every run of every session; returns one line per tracker run (what and where)."""
    if target not in TARGETS:
        raise TrackerError(f"--log-to: expected one of {', '.join(TARGETS)}, got {target!r}")
    lib = _import(target)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for st in states:
        stem = Path(st.source).stem or "live"
        for label, run in st.runs.items():
            if run.info is None:
                continue
            s = st.summary(label)
            rows = step_rows(s)
            name = f"{stem}/{label}"
            config = {"backend": run.info.backend, "strategy": run.info.strategy, "version": run.info.engine_version,
                      "session": st.source, "status": s.status}
            if target == "tensorboard":
                logdir = directory / stem / label
                w = lib.SummaryWriter(logdir=str(logdir))
                try:
                    w.add_text("sgtui/config", ", ".join(f"{k}: {v}" for k, v in config.items()), 0)
                    for step, row in rows:
                        for key, value in row.items():
                            w.add_scalar(key, value, step)
                finally:
                    w.close()
                out.append(f"tensorboard: {name} -> {logdir}")
            else:
                try:
                    run_ = lib.init(project="sgtui", name=name, group=stem, config=config, dir=str(directory),
                                    reinit="create_new")
                except Exception as e:  # noqa: BLE001 - wandb raises its own errors (login, mode): one line
                    raise TrackerError(f"--log-to wandb: {type(e).__name__}: {e}") from None
                try:
                    for step, row in rows:
                        run_.log(row, step=step)
                finally:
                    run_.finish()
                out.append(f"wandb: {name} -> {Path(run_.dir).parent}")  # the offline run (`wandb sync` it)
    return out
