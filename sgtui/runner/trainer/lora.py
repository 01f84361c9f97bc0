"""LoRA adapters on megatron's tensor-parallel projections, one A/B pair per Hugging Face target.

Megatron fuses q/k/v into `linear_qkv` and gate/up into `linear_fc1`, while
engines load adapters per HF module (q_proj, k_proj, ...). So each wrapper
keeps separate A/B per HF target (stored under its PEFT key, see
`peft_export`) and assembles their contributions into megatron's fused
output layout: per KV group [q | k | v] for `linear_qkv`, [gate | up] for
`linear_fc1`. A missing target contributes zeros.

TP-awareness (with W the frozen base weight, delta = scaling * B A x):
- column-parallel (q, k, v, gate, up): A is replicated, B holds this rank's
  output rows. `x A^T` is identical on all ranks; it goes through
  `copy_to_tensor_model_parallel_region` (identity forward, all-reduce
  backward) so the gradient of A and of x sums every rank's B shard.
- row-parallel (o, down): A holds this rank's input columns, B is
  replicated. `x_local A_local^T` is a partial sum, completed by
  `reduce_from_tensor_model_parallel_region` (all-reduce forward); B then
  sees the same input on every rank.
With this, replicated tensors receive identical gradients on every rank.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sgtui.runner.trainer import peft_export as pe
from sgtui.runner.trainer.mcore_model import HFShape


class _LoRA(nn.Module):
    """Common part: the frozen base layer and the per-target A/B parameters (rank-local shards)."""

    def __init__(self, base: nn.Module, layer: int, targets: list[str], rank: int, alpha: int) -> None:
        super().__init__()
        self.base = base
        self.layer = layer
        self.targets = list(targets)
        self.scaling = alpha / rank
        self.enabled = True
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()

    @property
    def weight(self) -> torch.Tensor:  # megatron code that inspects `linear_qkv.weight` still finds it
        return self.base.weight

    def add_pair(self, target: str, a: torch.Tensor, b: torch.Tensor) -> None:
        self.lora_A[target] = nn.Parameter(a.float().contiguous())
        self.lora_B[target] = nn.Parameter(b.float().contiguous())

    def keyed(self) -> dict[str, nn.Parameter]:
        out = {}
        for t in self.targets:
            out[pe.key(self.layer, t, "A")] = self.lora_A[t]
            out[pe.key(self.layer, t, "B")] = self.lora_B[t]
        return out


class ColumnLoRA(_LoRA):
    """LoRA on a ColumnParallelLinear whose output concatenates several HF projections."""

    def __init__(self, base: nn.Module, layer: int, targets: list[str], rank: int, alpha: int, combine) -> None:
        super().__init__(base, layer, targets, rank, alpha)
        self.combine = combine  # places each target's delta in the fused output layout (zeros where untrained)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        from megatron.core.tensor_parallel import copy_to_tensor_model_parallel_region

        out, bias = self.base(x, *args, **kwargs)
        if not self.enabled or not self.targets:
            return out, bias
        parts = {}
        for t in self.targets:
            h = copy_to_tensor_model_parallel_region(x @ self.lora_A[t].to(x.dtype).t())
            parts[t] = (h @ self.lora_B[t].to(x.dtype).t()) * self.scaling
        return out + self.combine(parts, out), bias


class RowLoRA(_LoRA):
    """LoRA on a RowParallelLinear (o_proj, down_proj): input split across ranks."""

    def forward(self, x: torch.Tensor, *args, **kwargs):
        from megatron.core.tensor_parallel import reduce_from_tensor_model_parallel_region

        out, bias = self.base(x, *args, **kwargs)
        if not self.enabled or not self.targets:
            return out, bias
        (t,) = self.targets
        h = reduce_from_tensor_model_parallel_region(x @ self.lora_A[t].to(x.dtype).t())
        return out + (h @ self.lora_B[t].to(x.dtype).t()) * self.scaling, bias


def _qkv_combiner(shape: HFShape, tp: int):
    groups = shape.kv_heads // tp
    per = shape.heads // shape.kv_heads
    hd = shape.head_dim

    def combine(parts: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        lead = like.shape[:-1]
        def get(t: str, width: int) -> torch.Tensor:
            d = parts.get(t)
            return d.reshape(*lead, groups, width) if d is not None else like.new_zeros(*lead, groups, width)
        return torch.cat([get("q_proj", per * hd), get("k_proj", hd), get("v_proj", hd)], dim=-1).reshape(*lead, -1)

    return combine


def _fc1_combiner(shape: HFShape, tp: int):
    width = shape.intermediate // tp

    def combine(parts: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        lead = like.shape[:-1]
        z = lambda t: parts[t] if t in parts else like.new_zeros(*lead, width)  # noqa: E731
        return torch.cat([z("gate_proj"), z("up_proj")], dim=-1)

    return combine


def full_shapes(shape: HFShape, rank: int) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Full (A, B) shapes of each target: A [r, in], B [out, r]."""
    h, q, kv, i = shape.hidden, shape.q_out, shape.kv_out, shape.intermediate
    io = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
          "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return {t: ((rank, fi), (fo, rank)) for t, (fi, fo) in io.items()}


def fresh_adapter(shape: HFShape, targets: list[str], rank: int, seed: int) -> dict[str, torch.Tensor]:
    """A new full adapter as PEFT initialises one: A ~ U(+-1/sqrt(in)) (kaiming, a=sqrt(5)), B = 0.

    Every tensor comes from its own generator seeded by (seed, layer, target),
    so every TP degree starts from the same adapter (their shards merge to it).
    """
    shapes = full_shapes(shape, rank)
    out = {}
    for layer in range(shape.layers):
        for n, t in enumerate(sorted(targets)):
            (a_shape, b_shape) = shapes[t]
            g = torch.Generator().manual_seed(seed * 1_000_003 + layer * 101 + n)
            bound = 1.0 / math.sqrt(a_shape[1])
            out[pe.key(layer, t, "A")] = (torch.rand(a_shape, generator=g) * 2 - 1) * bound
            out[pe.key(layer, t, "B")] = torch.zeros(b_shape)
    return out


def attach(model, shape: HFShape, targets: list[str], rank: int, alpha: int, tp: int,
           local: dict[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    """Wrap every layer's projections with LoRA initialised from `local` (this rank's shards, by PEFT key).

    Returns the trainable parameters keyed by PEFT key (values are this rank's shards).
    """
    for t in targets:
        pe.shard_axis(t, "A")  # raises for unsupported target names
    missing = [pe.key(i, t, w) for i in range(shape.layers) for t in targets for w in "AB"
               if pe.key(i, t, w) not in local]
    if missing:
        raise pe.AdapterMismatch(f"adapter lacks {len(missing)} tensors the config needs, e.g. {missing[0]}")
    device = next(model.parameters()).device
    shapes = full_shapes(shape, rank)
    params: dict[str, nn.Parameter] = {}
    col_qkv = [t for t in ("q_proj", "k_proj", "v_proj") if t in targets]
    col_fc1 = [t for t in ("gate_proj", "up_proj") if t in targets]
    for i, layer in enumerate(model.decoder.layers):
        attn, mlp = layer.self_attention, layer.mlp
        wrappers = []
        if col_qkv:
            attn.linear_qkv = ColumnLoRA(attn.linear_qkv, i, col_qkv, rank, alpha, _qkv_combiner(shape, tp))
            wrappers.append(attn.linear_qkv)
        if "o_proj" in targets:
            attn.linear_proj = RowLoRA(attn.linear_proj, i, ["o_proj"], rank, alpha)
            wrappers.append(attn.linear_proj)
        if col_fc1:
            mlp.linear_fc1 = ColumnLoRA(mlp.linear_fc1, i, col_fc1, rank, alpha, _fc1_combiner(shape, tp))
            wrappers.append(mlp.linear_fc1)
        if "down_proj" in targets:
            mlp.linear_fc2 = RowLoRA(mlp.linear_fc2, i, ["down_proj"], rank, alpha)
            wrappers.append(mlp.linear_fc2)
        for w in wrappers:
            for t in w.targets:
                a, b = local[pe.key(i, t, "A")], local[pe.key(i, t, "B")]
                for which, got, want in (("A", a, shapes[t][0]), ("B", b, shapes[t][1])):
                    expect = local_shape(want, pe.shard_axis(t, which), tp)
                    if tuple(got.shape) != expect:
                        raise pe.AdapterMismatch(f"{pe.key(i, t, which)}: shape {tuple(got.shape)} does not fit "
                                                 f"the model (expected {expect} at TP={tp})")
                w.add_pair(t, a.to(device), b.to(device))
            params.update(w.keyed())
    return params


def local_shape(full: tuple[int, int], axis: int | None, tp: int) -> tuple[int, int]:
    if axis is None:
        return tuple(full)
    out = list(full)
    out[axis] //= tp
    return tuple(out)


def set_enabled(model, enabled: bool) -> None:
    """Switch every adapter off (frozen base model, e.g. the KL reference) or back on."""
    for m in model.modules():
        if isinstance(m, _LoRA):
            m.enabled = enabled


def is_replicated(k: str) -> bool:
    _, target, which = pe.parse_key(k)
    return pe.shard_axis(target, which) is None
