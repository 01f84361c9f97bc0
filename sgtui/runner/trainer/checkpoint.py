"""Trainer state between steps: each rank's LoRA shards and AdamW state, plus what they were made for.

Each step is a fresh torchrun launch, so step N+1 continues from step N only
through this directory. `meta.json` records the model shape, LoRA settings
and TP degree; a state saved for anything else is refused (CheckpointMismatch)
instead of being silently loaded into a model it does not fit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from sgtui.runner.trainer.mcore_model import CheckpointMismatch, HFShape


def meta(shape: HFShape, job, tp: int) -> dict[str, Any]:
    return {"model": shape.fingerprint(), "lora_rank": job.lora_rank, "lora_alpha": job.lora_alpha,
            "lora_targets": sorted(job.lora_targets), "tp": tp}


def load(state_dir: str | Path, want: dict[str, Any], tp_rank: int) -> dict[str, Any] | None:
    """This rank's saved state, None when there is none yet."""
    d = Path(state_dir)
    meta_path = d / "meta.json"
    if not meta_path.exists():
        return None
    have = json.loads(meta_path.read_text())
    saved_step = have.pop("step", 0)
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise CheckpointMismatch(f"trainer state in {d} was saved for a different config ({', '.join(diff)}): "
                                 f"saved {[have.get(k) for k in diff]}, now {[want.get(k) for k in diff]}")
    path = d / f"rank{tp_rank}.pt"
    if not path.exists():
        raise CheckpointMismatch(f"trainer state {path} is missing")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["step"] = saved_step
    return state


def save(state_dir: str | Path, meta_: dict[str, Any], tp_rank: int, lora: dict[str, torch.Tensor],
         optim: dict, step: int) -> None:
    """Write atomically per file; rank 0 writes meta.json last, after its own shard."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"rank{tp_rank}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"lora": {k: v.detach().cpu() for k, v in lora.items()}, "optim": _cpu(optim)}, tmp)
    os.replace(tmp, path)
    if tp_rank == 0:
        mtmp = d / "meta.json.tmp"
        mtmp.write_text(json.dumps({**meta_, "step": step}, indent=1))
        os.replace(mtmp, d / "meta.json")


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj
