"""Full weights out of the megatron trainer, as the engines load them: Hugging Face names and layout, the LoRA
merged into the base, tensor-parallel shards gathered, packed into buckets.

Contract:
- `to_hf(name, parts, shape, tp)`: megatron parameter `name` (every TP rank's shard, rank order, as an
  all-gather returns them) -> the Hugging Face tensors it holds. The exact inverse of
  `mcore_model.hf_shard_for` (the loader): vocabulary rows cut back to the real vocabulary, per-KV-group
  [q | k | v] rows unfused, each rank's [gate | up] halves split, row-parallel columns concatenated.
  `test_full_sync_cpu.py` round-trips every tensor of a GQA and a Qwen2 (biases, tied embeddings)
  checkpoint at TP=1 and TP=2, bit for bit.
- `merge_lora(hf_name, w, adapter, scaling)`: W + scaling * B @ A for the HF projection a PEFT adapter
  targets, summed in float32 and cast back to W's dtype: what LoRA stacks that sync full weights do
  (verl, slime, NeMo-RL merge before they push). In bfloat16 a small update can round away entirely
  (a delta below half an ulp of the base weight); `Digest` tells the runner whether the bytes handed over
  changed at all, so a no-op update is not mistaken for a sync that failed.
- `plan(sizes, bucket_bytes)`: tensors in order, cut into buckets of at most `bucket_bytes`; a tensor
  larger than a bucket travels alone (a 7B model's embedding, 1.1 GB, exceeds the 512 MiB default).
- `pack(tensors, into)`: one flat uint8 buffer per bucket, tensors back to back without padding: the
  layout of SGLang's `FlattenedTensorBucket` and of vLLM's `packed_ipc_producer` alike, so one buffer
  feeds either engine (`ipc_wire` writes the engine's metadata around it).
- `write_shard` / `finish_checkpoint`: a bucket as `model-0000k-of-0000n.safetensors`, then the index,
  the config and the tokenizer files of the base model: a directory both engines reload from
  (`/update_weights_from_disk`, vLLM's `reload_weights` with `weights_path`) and serve fresh.

Pure torch and safetensors: no megatron import (the layout is checked without building a model).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sgtui.runner.trainer import peft_export as pe

#: Files of the base model directory copied next to the written weights (config and tokenizer: what an
#: engine reads when it is pointed at the directory, and what serving it fresh needs).
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
               "chat_template.jinja")
INDEX = "model.safetensors.index.json"


class ExportError(Exception):
    """A megatron parameter this exporter cannot map back (the loader would not have produced it)."""


def hf_name_of_lora(peft_key: str) -> str:
    """`base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    layer, target, _ = pe.parse_key(peft_key)
    return f"model.layers.{layer}.{pe.BLOCK[target]}.{target}.weight"


def base_param_name(name: str) -> str | None:
    """The megatron base parameter a model parameter is (`.base.` of a LoRA wrapper dropped); None for LoRA
    tensors themselves (they are merged, not exported)."""
    if ".lora_A." in name or ".lora_B." in name:
        return None
    return name.replace(".base.", ".")


#: Megatron parameters split across TP ranks (everything but the norms, which every rank holds whole).
_SHARDED = ("embedding.word_embeddings.weight", "output_layer.weight", "linear_qkv.weight", "linear_qkv.bias",
            "linear_proj.weight", "linear_fc1.weight", "linear_fc2.weight")


def is_tp_sharded(name: str) -> bool:
    return name.endswith(_SHARDED)


def to_hf(name: str, parts: list[torch.Tensor], shape, tp: int) -> list[tuple[str, torch.Tensor]]:
    """The Hugging Face tensors held by megatron parameter `name`, from its TP shards in rank order.

    A replicated parameter (norms) may be given as one part. Inverse of `mcore_model.hf_shard_for`."""
    if len(parts) not in (1, tp):
        raise ExportError(f"{name}: {len(parts)} shards for TP={tp}")
    h, inter = shape.hidden, shape.intermediate
    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        full = torch.cat(parts, dim=0)[: shape.vocab]
        return [("model.embed_tokens.weight" if name.startswith("embedding") else "lm_head.weight", full)]
    if name == "decoder.final_layernorm.weight":
        return [("model.norm.weight", parts[0])]
    bits = name.split(".")
    if bits[:2] != ["decoder", "layers"] or len(bits) < 5:
        raise ExportError(f"no Hugging Face tensor for megatron parameter {name}")
    i, rest = int(bits[2]), ".".join(bits[3:])
    hf = f"model.layers.{i}"
    if rest in ("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"):
        return [(f"{hf}.input_layernorm.weight", parts[0])]
    if rest in ("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"):
        return [(f"{hf}.post_attention_layernorm.weight", parts[0])]
    if rest in ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias"):
        suffix = rest.rsplit(".", 1)[1]
        q, k, v = unfuse_qkv(torch.cat(parts, dim=0), shape)
        return [(f"{hf}.self_attn.{p}_proj.{suffix}", t) for p, t in zip("qkv", (q, k, v))]
    if rest == "self_attention.linear_proj.weight":
        return [(f"{hf}.self_attn.o_proj.weight", torch.cat(parts, dim=1))]
    if rest == "mlp.linear_fc1.weight":
        half = inter // tp
        for p in parts:
            if p.shape[0] != 2 * half:
                raise ExportError(f"{name}: shard of {p.shape[0]} rows, expected gate+up {2 * half}")
        gate = torch.cat([p[:half] for p in parts], dim=0)
        up = torch.cat([p[half:] for p in parts], dim=0)
        return [(f"{hf}.mlp.gate_proj.weight", gate), (f"{hf}.mlp.up_proj.weight", up)]
    if rest == "mlp.linear_fc2.weight":
        full = torch.cat(parts, dim=1)
        if full.shape != (h, inter):
            raise ExportError(f"{name}: gathered {tuple(full.shape)}, expected {(h, inter)}")
        return [(f"{hf}.mlp.down_proj.weight", full)]
    raise ExportError(f"no Hugging Face tensor for megatron parameter {name}")


def unfuse_qkv(fused: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full q, k, v (dim 0 = output rows) from megatron's grouped [q_g | k_g | v_g] rows, all groups."""
    hd, groups = shape.head_dim, shape.kv_heads
    per = shape.heads // groups
    width = (per + 2) * hd
    if fused.shape[0] != groups * width:
        raise ExportError(f"linear_qkv: {fused.shape[0]} rows, expected {groups} groups of {width}")
    g = fused.reshape(groups, width, *fused.shape[1:])
    q = g[:, : per * hd].reshape(groups * per * hd, *fused.shape[1:])
    k = g[:, per * hd: (per + 1) * hd].reshape(groups * hd, *fused.shape[1:])
    v = g[:, (per + 1) * hd:].reshape(groups * hd, *fused.shape[1:])
    return q, k, v


def lora_pairs(adapter: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """HF weight name -> (A, B) of a full PEFT adapter."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, t in adapter.items():
        _, _, which = pe.parse_key(k)
        if which == "A":
            out[hf_name_of_lora(k)] = (t, adapter[k.replace(".lora_A.", ".lora_B.")])
    return out


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float, device=None) -> torch.Tensor:
    """scaling * B @ A in float32 (on `device`, default B's)."""
    dev = device if device is not None else b.device
    return (b.to(dev, torch.float32) @ a.to(dev, torch.float32)) * scaling


def merge_lora(w: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor] | None, scaling: float) -> torch.Tensor:
    """W + scaling * B @ A, summed in float32, in W's dtype and device; W itself when nothing targets it."""
    if pair is None:
        return w
    return (w.float() + lora_delta(pair[0], pair[1], scaling, w.device)).to(w.dtype)


@dataclass
class Digest:
    """A cheap fingerprint of the bytes handed over (float64 sum and sum of squares per tensor, summed): two
    exports with equal digests carry equal weights for any practical purpose; a different digest means
    some element changed in the engine's dtype."""

    total: float = 0.0
    squares: float = 0.0
    elements: int = 0

    #: elements summed at a time: the float64 copy stays at 128 MiB however large the tensor (a 7B model's
    #: embedding is 0.5 G elements; on the GPU the engine holds its memory again while the sync runs)
    CHUNK = 1 << 24

    def add(self, t: torch.Tensor) -> None:
        for part in t.detach().reshape(-1).split(self.CHUNK):
            d = part.double()
            self.total += float(d.sum())
            self.squares += float((d * d).sum())
        self.elements += t.numel()

    def as_list(self) -> list[float]:
        return [self.total, self.squares, float(self.elements)]


def plan(sizes: list[int], bucket_bytes: int) -> list[list[int]]:
    """Indices of tensors, in order, cut into buckets of at most bucket_bytes (an oversized tensor alone)."""
    buckets: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i, n in enumerate(sizes):
        if cur and used + n > bucket_bytes:
            buckets.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        buckets.append(cur)
    return buckets


@dataclass
class Packed:
    """One bucket: a flat uint8 buffer and where each tensor lies in it."""

    buffer: torch.Tensor
    names: list[str] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)
    dtypes: list[torch.dtype] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # bytes

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)

    def offsets(self) -> list[tuple[int, int]]:
        out, at = [], 0
        for n in self.sizes:
            out.append((at, at + n))
            at += n
        return out

    def views(self) -> list[tuple[str, torch.Tensor]]:
        """The tensors as views of the buffer (what the engine reconstructs)."""
        return [(name, self.buffer[a:b].view(dt).view(*shape))
                for name, shape, dt, (a, b) in zip(self.names, self.shapes, self.dtypes, self.offsets())]


def pack(tensors: list[tuple[str, torch.Tensor]], into: torch.Tensor) -> Packed:
    """Copy tensors back to back into the uint8 buffer `into` (large enough), recording the layout."""
    p = Packed(buffer=into)
    at = 0
    for name, t in tensors:
        flat = t.detach().contiguous().view(-1).view(torch.uint8)
        into[at: at + flat.numel()].copy_(flat)
        p.names.append(name)
        p.shapes.append(list(t.shape))
        p.dtypes.append(t.dtype)
        p.sizes.append(flat.numel())
        at += flat.numel()
    return p


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def shard_name(k: int, n: int) -> str:
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def write_shard(out_dir: Path, k: int, n: int, tensors: list[tuple[str, torch.Tensor]]) -> int:
    """Write bucket k of n as a safetensors shard; returns its bytes on disk."""
    from safetensors.torch import save_file

    path = out_dir / shard_name(k, n)
    save_file({name: t.detach().to("cpu").contiguous() for name, t in tensors}, str(path),
              metadata={"format": "pt"})
    return path.stat().st_size


def start_checkpoint(out_dir: str | Path) -> Path:
    """A fresh `.partial` directory next to out_dir (a reader never sees a half-written checkpoint)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def finish_checkpoint(tmp: Path, out_dir: str | Path, model_dir: str | Path, weight_map: dict[str, str],
                      total_bytes: int) -> Path:
    """Index, config and tokenizer files next to the shards, then the directory renamed into place."""
    (tmp / INDEX).write_text(json.dumps({"metadata": {"total_size": total_bytes}, "weight_map": weight_map},
                                        indent=1))
    src = Path(model_dir)
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, tmp / name)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
