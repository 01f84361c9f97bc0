"""LoRA tensors in Hugging Face PEFT format: TP shard layout, merge, split, write, read.

The engines load adapters as PEFT directories (`adapter_config.json` +
`adapter_model.safetensors`, keys like
`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`). The trainer
keeps every LoRA tensor under exactly that key, each TP rank holding its
shard, so export is a concatenation and import a slice, with no renaming
step that could drift. Which axis is sharded follows megatron's layers:

- column-parallel projections (q, k, v, gate, up): output rows are split, so
  B [out, r] is split on dim 0 and A [r, in] is replicated;
- row-parallel projections (o, down): input columns are split, so A [r, in]
  is split on dim 1 and B [out, r] is replicated.

Pure torch + safetensors: no megatron import, usable from tests and the runner.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

COLUMN_TARGETS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_TARGETS = ("o_proj", "down_proj")
BLOCK = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
         "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
PREFIX = "base_model.model.model.layers"


class AdapterMismatch(Exception):
    """A PEFT adapter whose rank, targets or shapes do not fit the trainer's LoRA config."""


def key(layer: int, target: str, which: str) -> str:
    """PEFT key of a LoRA tensor; which is "A" or "B"."""
    return f"{PREFIX}.{layer}.{BLOCK[target]}.{target}.lora_{which}.weight"


def parse_key(k: str) -> tuple[int, str, str]:
    """(layer, target, "A"|"B") of a PEFT key; AdapterMismatch for anything else."""
    parts = k.split(".")
    try:
        if ".".join(parts[:4]) != PREFIX or parts[-1] != "weight":
            raise ValueError
        layer, target, which = int(parts[4]), parts[6], parts[7].removeprefix("lora_")
        if target not in BLOCK or which not in ("A", "B") or parts[5] != BLOCK[target]:
            raise ValueError
    except (ValueError, IndexError):
        raise AdapterMismatch(f"unexpected adapter tensor {k!r}") from None
    return layer, target, which


def shard_axis(target: str, which: str) -> int | None:
    """Dimension along which TP ranks split this LoRA tensor, None if every rank holds all of it."""
    if target in COLUMN_TARGETS:
        return 0 if which == "B" else None
    if target in ROW_TARGETS:
        return 1 if which == "A" else None
    raise AdapterMismatch(f"LoRA target {target!r} is not supported (use {', '.join(COLUMN_TARGETS + ROW_TARGETS)})")


def split(full: dict[str, torch.Tensor], tp: int, rank: int) -> dict[str, torch.Tensor]:
    """One rank's shards of a full adapter."""
    out = {}
    for k, t in full.items():
        _, target, which = parse_key(k)
        axis = shard_axis(target, which)
        if axis is not None and t.shape[axis] % tp:
            raise AdapterMismatch(f"{k}: dimension {axis} ({t.shape[axis]}) does not split over TP={tp}")
        out[k] = t if axis is None else t.chunk(tp, dim=axis)[rank].contiguous()
    return out


def merge(shards: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The full adapter from every rank's shards (rank order), concatenating the sharded axis."""
    out = {}
    for k in shards[0]:
        _, target, which = parse_key(k)
        axis = shard_axis(target, which)
        out[k] = shards[0][k] if axis is None else torch.cat([s[k] for s in shards], dim=axis)
    return out


def config_dict(rank: int, alpha: int, targets: list[str], base_model: str = "") -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or None,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted(targets),
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }


def write(out_dir: str | Path, tensors: dict[str, torch.Tensor], rank: int, alpha: int, targets: list[str],
          base_model: str = "") -> Path:
    """Write a PEFT adapter atomically (a finished directory or none: engines may be told to load it at once)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sorted(tensors.items())},
              str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp / "adapter_config.json").write_text(json.dumps(config_dict(rank, alpha, targets, base_model), indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def read(adapter_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config, tensors) of a PEFT adapter directory."""
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    try:
        cfg = json.loads((d / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise AdapterMismatch(f"{d}: no readable adapter_config.json ({e})") from None
    path = d / "adapter_model.safetensors"
    if not path.exists():
        raise AdapterMismatch(f"{d}: no adapter_model.safetensors")
    return cfg, load_file(str(path))


def check_compatible(cfg: dict, tensors: dict[str, torch.Tensor], rank: int, alpha: int, targets: list[str],
                     layers: int) -> None:
    """An adapter the trainer continues from must have the trainer's LoRA rank, alpha and targets."""
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterMismatch(f"adapter peft_type {cfg.get('peft_type')!r}, expected LORA")
    if int(cfg.get("r", -1)) != rank or int(cfg.get("lora_alpha", -1)) != alpha:
        raise AdapterMismatch(f"adapter has r={cfg.get('r')} lora_alpha={cfg.get('lora_alpha')}, "
                              f"the trainer is configured for r={rank} lora_alpha={alpha}")
    have = {(layer, target) for layer, target, _ in map(parse_key, tensors)}
    want = {(layer, target) for layer in range(layers) for target in targets}
    if have != want:
        extra, missing = sorted(have - want)[:3], sorted(want - have)[:3]
        raise AdapterMismatch(f"adapter targets differ from the config: extra {extra}, missing {missing}")
