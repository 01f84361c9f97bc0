"""megatron-core GPTModel built from a Hugging Face Llama/Qwen2 config, base weights loaded and frozen.

The served model is a Hugging Face directory; the trainer must compute exactly
the function the engine serves, so this maps the HF config onto a
`TransformerConfig` (RMSNorm, SwiGLU, RoPE, GQA, tied or untied embeddings,
Qwen2's q/k/v bias) and the HF tensors onto megatron's fused layout, each rank
reading only its tensor-parallel shard from the safetensors files:

- `linear_qkv` holds, per KV group g, [q heads of g | k_g | v_g] rows; a TP
  rank owns a contiguous run of groups (so groups must divide by TP);
- `linear_fc1` holds [gate shard | up shard] rows of the rank (SwiGLU's
  `chunk(2)` splits it locally);
- `linear_proj` / `linear_fc2` are row-parallel: column shards of o/down;
- word embeddings and the output layer are split by vocabulary rows; the
  vocabulary is padded to a multiple of TP and padded logits are masked.

Uses the local layer spec (no Transformer Engine, no Apex). Anything in the
checkpoint that does not fit the config raises `CheckpointMismatch`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sgtui.runner.trainer.cpu_shims import causal_mask


class CheckpointMismatch(Exception):
    """The weights on disk (or a saved trainer state) do not match the model config."""


class UnsupportedModel(Exception):
    """A Hugging Face config this trainer cannot represent faithfully."""


@dataclass(frozen=True)
class HFShape:
    """The numbers of a Llama/Qwen2-style HF config that the megatron model and LoRA layout depend on."""

    arch: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    rope_theta: float
    tie: bool
    qkv_bias: bool
    max_positions: int
    dtype: str
    rope_scaling_factor: float = 0.0  # llama3-style scaling; 0 = none

    @property
    def q_out(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_out(self) -> int:
        return self.kv_heads * self.head_dim

    def fingerprint(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("arch", "vocab", "hidden", "layers", "heads", "kv_heads", "head_dim",
                                              "intermediate", "tie", "qkv_bias")}


SUPPORTED = {"LlamaForCausalLM", "Qwen2ForCausalLM"}  # Mistral: sliding-window attention not mapped


def read_hf_shape(model_dir: str | Path) -> HFShape:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    arch = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
    if arch not in SUPPORTED:
        raise UnsupportedModel(f"{arch}: the megatron trainer supports {', '.join(sorted(SUPPORTED))}")
    if cfg.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"hidden_act {cfg.get('hidden_act')!r}: only SwiGLU (silu) is supported")
    # transformers 5 writes RoPE settings under `rope_parameters`; older configs use rope_theta/rope_scaling
    rope = cfg.get("rope_parameters") or {}
    theta = float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else {})
    factor = 0.0
    if scaling:
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind == "default":
            factor = 0.0
        elif kind == "llama3" and scaling.get("low_freq_factor", 1) == 1 and scaling.get("high_freq_factor", 4) == 4 \
                and scaling.get("original_max_position_embeddings", 8192) == 8192:
            factor = float(scaling.get("factor", 8.0))  # megatron's apply_rope_scaling uses these constants
        else:
            raise UnsupportedModel(f"rope_scaling {scaling}: only llama3 scaling with megatron's constants "
                                   "is supported")
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    return HFShape(
        arch=arch,
        vocab=int(cfg["vocab_size"]),
        hidden=hidden,
        layers=int(cfg["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate=int(cfg["intermediate_size"]),
        eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        tie=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=arch == "Qwen2ForCausalLM" or bool(cfg.get("attention_bias", False)),
        max_positions=int(cfg.get("max_position_embeddings", 4096)),
        dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
        rope_scaling_factor=factor,
    )


def padded_vocab(vocab: int, tp: int) -> int:
    return -(-vocab // tp) * tp


def build_model(shape: HFShape, tp: int, dtype: torch.dtype, device: str):
    """A GPTModel with the local layer spec, parameters allocated (not initialised) on `device`."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    if shape.kv_heads % tp or shape.heads % tp:
        raise UnsupportedModel(f"TP={tp} must divide both the {shape.heads} heads and the {shape.kv_heads} KV heads")
    config = TransformerConfig(
        num_layers=shape.layers,
        hidden_size=shape.hidden,
        num_attention_heads=shape.heads,
        num_query_groups=shape.kv_heads,
        kv_channels=shape.head_dim,
        ffn_hidden_size=shape.intermediate,
        normalization="RMSNorm",
        layernorm_epsilon=shape.eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=shape.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        attention_softmax_in_fp32=True,
        tensor_model_parallel_size=tp,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu_initialization=device == "cpu",
        perform_initialization=False,  # every base weight is overwritten from the checkpoint
    )
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=padded_vocab(shape.vocab, tp),
        max_sequence_length=shape.max_positions,
        pre_process=True,
        post_process=True,
        parallel_output=True,
        share_embeddings_and_output_weights=shape.tie,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=int(shape.rope_theta),
        rope_scaling=shape.rope_scaling_factor > 0,
        rope_scaling_factor=shape.rope_scaling_factor or 8.0,
    )
    return model.to(device=device)


class HFWeights:
    """Lazy reader of a HF checkpoint's safetensors (one file or an index of shards)."""

    def __init__(self, model_dir: str | Path) -> None:
        from safetensors import safe_open

        d = Path(model_dir)
        index = d / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        self._handles = {}
        self._where: dict[str, str] = {}
        for name in files:
            path = d / name
            if not path.exists():
                raise CheckpointMismatch(f"{path} is missing (the megatron trainer needs safetensors weights)")
            h = safe_open(str(path), framework="pt")
            self._handles[name] = h
            for key in h.keys():
                self._where[key] = name

    def has(self, key: str) -> bool:
        return key in self._where

    def rows(self, key: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Rows [start:stop) of a tensor (dim 0), reading only that slice from disk."""
        if key not in self._where:
            raise CheckpointMismatch(f"checkpoint has no tensor {key!r}")
        sl = self._handles[self._where[key]].get_slice(key)
        return sl[start:stop] if start is not None else sl[:]

    def cols(self, key: str, start: int, stop: int) -> torch.Tensor:
        if key not in self._where:
            raise CheckpointMismatch(f"checkpoint has no tensor {key!r}")
        return self._handles[self._where[key]].get_slice(key)[:, start:stop]

    def shape(self, key: str) -> list[int]:
        if key not in self._where:
            raise CheckpointMismatch(f"checkpoint has no tensor {key!r}")
        return list(self._handles[self._where[key]].get_slice(key).get_shape())


def _check_shape(key: str, got: list[int], want: list[int]) -> None:
    if list(got) != list(want):
        raise CheckpointMismatch(f"{key}: checkpoint shape {list(got)} does not match the config's {list(want)}")


def hf_shard_for(name: str, shape: HFShape, w: HFWeights, tp: int, rank: int) -> torch.Tensor:
    """The rank's slice of the HF tensors that make up megatron parameter `name`."""
    h, q, kv, inter = shape.hidden, shape.q_out, shape.kv_out, shape.intermediate
    vp = padded_vocab(shape.vocab, tp) // tp

    def vocab_rows(key: str) -> torch.Tensor:
        _check_shape(key, w.shape(key), [shape.vocab, h])
        lo, hi = rank * vp, (rank + 1) * vp
        part = w.rows(key, min(lo, shape.vocab), min(hi, shape.vocab))
        if part.shape[0] < vp:  # padded vocabulary entries: zero rows, their logits are masked
            part = torch.cat([part, part.new_zeros(vp - part.shape[0], h)])
        return part

    if name == "embedding.word_embeddings.weight":
        return vocab_rows("model.embed_tokens.weight")
    if name == "output_layer.weight":
        return vocab_rows("lm_head.weight")
    if name == "decoder.final_layernorm.weight":
        _check_shape("model.norm.weight", w.shape("model.norm.weight"), [h])
        return w.rows("model.norm.weight")
    parts = name.split(".")
    if parts[:2] != ["decoder", "layers"]:
        raise CheckpointMismatch(f"no Hugging Face tensor maps to megatron parameter {name}")
    i, rest = int(parts[2]), ".".join(parts[3:])
    hf = f"model.layers.{i}"
    if rest == "self_attention.linear_qkv.layer_norm_weight" or rest == "input_layernorm.weight":
        _check_shape(f"{hf}.input_layernorm.weight", w.shape(f"{hf}.input_layernorm.weight"), [h])
        return w.rows(f"{hf}.input_layernorm.weight")
    if rest in ("mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"):
        _check_shape(f"{hf}.post_attention_layernorm.weight", w.shape(f"{hf}.post_attention_layernorm.weight"), [h])
        return w.rows(f"{hf}.post_attention_layernorm.weight")
    if rest in ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.bias"):
        suffix = rest.rsplit(".", 1)[1]
        keys = [f"{hf}.self_attn.{p}_proj.{suffix}" for p in "qkv"]
        for key, rows in zip(keys, (q, kv, kv)):
            _check_shape(key, w.shape(key), [rows, h] if suffix == "weight" else [rows])
        return fuse_qkv_shard([w.rows(k) for k in keys], shape, tp, rank)
    if rest == "self_attention.linear_proj.weight":
        key = f"{hf}.self_attn.o_proj.weight"
        _check_shape(key, w.shape(key), [h, q])
        return w.cols(key, rank * q // tp, (rank + 1) * q // tp)
    if rest == "mlp.linear_fc1.weight":
        keys = [f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"]
        for key in keys:
            _check_shape(key, w.shape(key), [inter, h])
        lo, hi = rank * inter // tp, (rank + 1) * inter // tp
        return torch.cat([w.rows(k, lo, hi) for k in keys])
    if rest == "mlp.linear_fc2.weight":
        key = f"{hf}.mlp.down_proj.weight"
        _check_shape(key, w.shape(key), [h, inter])
        return w.cols(key, rank * inter // tp, (rank + 1) * inter // tp)
    raise CheckpointMismatch(f"no Hugging Face tensor maps to megatron parameter {name}")


def fuse_qkv_shard(qkv: list[torch.Tensor], shape: HFShape, tp: int, rank: int) -> torch.Tensor:
    """Megatron's grouped [q_g | k_g | v_g] layout of one TP rank, from full HF q, k, v (dim 0 = output rows)."""
    q, k, v = qkv
    hd, groups = shape.head_dim, shape.kv_heads
    per = shape.heads // groups
    local = groups // tp
    out = []
    for g in range(rank * local, (rank + 1) * local):
        out += [q[g * per * hd:(g + 1) * per * hd], k[g * hd:(g + 1) * hd], v[g * hd:(g + 1) * hd]]
    return torch.cat(out)


def load_base_weights(model, shape: HFShape, model_dir: str | Path, tp: int, rank: int) -> int:
    """Copy the rank's shards of the HF weights into the model and freeze every base parameter.

    Returns the number of parameters loaded. Raises CheckpointMismatch on a
    missing tensor or a shape that disagrees with the config.
    """
    w = HFWeights(model_dir)
    if not shape.tie and not w.has("lm_head.weight"):
        raise CheckpointMismatch("config says untied embeddings but the checkpoint has no lm_head.weight")
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            src = hf_shard_for(name, shape, w, tp, rank)
            if tuple(src.shape) != tuple(p.shape):
                raise CheckpointMismatch(f"{name}: checkpoint slice {tuple(src.shape)} != model {tuple(p.shape)}")
            p.copy_(src.to(p.dtype))
            p.requires_grad_(False)
            n += p.numel()
    return n


def token_logprobs(model, input_ids: torch.Tensor, shape: HFShape, tp: int) -> torch.Tensor:
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every position t, shape [b, s-1].

    Logits stay split by vocabulary across TP ranks; megatron's vocab-parallel
    cross entropy turns them into log-probs without gathering the vocabulary.
    Padded vocabulary entries are masked to -inf so the softmax is the HF one.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    logits = local_logits(model, input_ids)  # [b, s, v/tp]
    logits = mask_padded_vocab(logits, shape.vocab, tp, parallel_state.get_tensor_model_parallel_rank())
    targets = input_ids[:, 1:]
    # vocab_parallel_cross_entropy wants [s, b, v] logits and [s, b] targets and modifies nothing in place
    nll = vocab_parallel_cross_entropy(logits[:, :-1].transpose(0, 1).contiguous().float(),
                                       targets.transpose(0, 1).contiguous())
    return -nll.transpose(0, 1)


def local_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """This rank's vocabulary shard of the logits, [b, s, v/tp], always with an explicit causal mask."""
    b, s = input_ids.shape
    position_ids = torch.arange(s, device=input_ids.device).unsqueeze(0).expand(b, s)
    return model(input_ids, position_ids, causal_mask(s, input_ids.device))


def mask_padded_vocab(logits: torch.Tensor, vocab: int, tp: int, rank: int) -> torch.Tensor:
    vp = logits.shape[-1]
    lo = rank * vp
    if lo + vp <= vocab:
        return logits
    keep = torch.arange(lo, lo + vp, device=logits.device) < vocab
    return logits.masked_fill(~keep, float("-inf"))


def gather_logits(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """All vocabulary shards concatenated (tests and checks only: the trainer never needs full logits)."""
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    return gather_from_tensor_model_parallel_region(logits)[..., :vocab]
