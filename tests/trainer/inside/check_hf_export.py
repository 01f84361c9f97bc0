"""Torch-side checks of the full-weight export (run in the trainer venv by tests/trainer/test_full_sync.py).

The exporter must be the exact inverse of the loader: every tensor of a real HF checkpoint, sliced per TP rank
by `mcore_model.hf_shard_for` and put back by `hf_export.to_hf`, comes out bit for bit. Models: the GQA
checkpoint (SGTUI_TEST_MODEL: 4 heads over 2 KV groups, untied) and a Qwen2 (SGTUI_TEST_QWEN2: q/k/v biases,
tied embeddings), at TP=1 and TP=2. Named check_*.py so sgtui's own run (no torch) does not collect it.
"""

import os
import pickle
import base64
from types import SimpleNamespace

import pytest
import torch

from sgtui.runner.trainer import hf_export as hx
from sgtui.runner.trainer import ipc_wire
from sgtui.runner.trainer import peft_export as pe
from sgtui.runner.trainer.mcore_model import HFWeights, hf_shard_for, read_hf_shape

MODELS = [m for m in (os.environ.get("SGTUI_TEST_MODEL"), os.environ.get("SGTUI_TEST_QWEN2")) if m]


def megatron_names(shape) -> list[str]:
    """The base parameters of megatron's GPTModel (local spec) for this config, as worker.push meets them."""
    names = ["embedding.word_embeddings.weight"]
    for i in range(shape.layers):
        p = f"decoder.layers.{i}."
        names += [p + "input_layernorm.weight", p + "self_attention.linear_qkv.weight"]
        names += [p + "self_attention.linear_qkv.bias"] if shape.qkv_bias else []
        names += [p + "self_attention.linear_proj.weight", p + "pre_mlp_layernorm.weight",
                  p + "mlp.linear_fc1.weight", p + "mlp.linear_fc2.weight"]
    names.append("decoder.final_layernorm.weight")
    return names + ([] if shape.tie else ["output_layer.weight"])


@pytest.mark.parametrize("tp", [1, 2])
@pytest.mark.parametrize("model", MODELS)
def test_export_inverts_the_loader_bit_for_bit(model, tp):
    shape = read_hf_shape(model)
    w = HFWeights(model)
    got: dict[str, torch.Tensor] = {}
    for name in megatron_names(shape):
        parts = [hf_shard_for(name, shape, w, tp, r) for r in range(tp)]
        if not hx.is_tp_sharded(name):
            assert all(torch.equal(parts[0], x) for x in parts)
            parts = parts[:1]
        for hf_name, t in hx.to_hf(name, parts, shape, tp):
            assert hf_name not in got
            got[hf_name] = t
    want = set(w._where)
    assert set(got) == want, (sorted(want - set(got)), sorted(set(got) - want))
    for k in want:
        assert torch.equal(got[k], w.rows(k)), k


def test_merge_is_the_peft_formula_in_float32_and_keeps_the_dtype():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=g).to(torch.bfloat16)
    a, b = torch.randn(2, 4, generator=g), torch.randn(6, 2, generator=g)
    merged = hx.merge_lora(base, (a, b), 2.0)
    assert merged.dtype == torch.bfloat16
    assert torch.equal(merged, (base.float() + 2.0 * b @ a).to(torch.bfloat16))
    assert hx.merge_lora(base, None, 2.0) is base
    key = pe.key(3, "q_proj", "A")
    assert hx.hf_name_of_lora(key) == "model.layers.3.self_attn.q_proj.weight"
    pairs = hx.lora_pairs({key: a, pe.key(3, "q_proj", "B"): b})
    assert list(pairs) == ["model.layers.3.self_attn.q_proj.weight"]
    assert pairs["model.layers.3.self_attn.q_proj.weight"][0] is a and pairs["model.layers.3.self_attn.q_proj.weight"][1] is b


def test_a_tiny_update_can_vanish_in_bf16_and_the_digest_says_so():
    base = torch.full((64, 64), 0.02).to(torch.bfloat16)
    a, b = torch.full((1, 64), 1e-3), torch.full((64, 1), 1e-3)  # delta 1e-6 per element: below half an ulp
    merged = hx.merge_lora(base, (a, b), 1.0)
    d0, d1 = hx.Digest(), hx.Digest()
    d0.add(base)
    d1.add(merged)
    assert torch.equal(merged, base) and d0.as_list() == d1.as_list()
    bigger = hx.merge_lora(base, (a * 100, b * 100), 1.0)  # 1e-2 per element: the bytes change
    d2 = hx.Digest()
    d2.add(bigger)
    assert d2.as_list() != d0.as_list()


def test_buckets_keep_order_and_bound_size_and_an_oversized_tensor_goes_alone():
    assert hx.plan([4, 4, 4, 10, 1, 1], 8) == [[0, 1], [2], [3], [4, 5]]
    assert hx.plan([], 8) == []
    tensors = [("a", torch.arange(6, dtype=torch.float32).view(2, 3)), ("b", torch.tensor([7], dtype=torch.int64)),
               ("c", torch.ones(3, dtype=torch.bfloat16))]
    size = sum(hx.nbytes(t) for _, t in tensors)
    packed = hx.pack(tensors, torch.empty(size, dtype=torch.uint8))
    assert packed.nbytes == size == 24 + 8 + 6 and packed.offsets()[1] == (24, 32)
    for (name, t), (n2, v) in zip(tensors, packed.views()):
        assert name == n2 and v.dtype == t.dtype and torch.equal(v, t)


def test_sglang_payload_is_its_flattened_bucket_wire_format():
    """What SGLang's loader does with it (weight_updater._update_weights_from_flattened_bucket): unpickle,
    rebuild each tensor from the metadata's byte range, dtype and shape."""
    ipc_wire.use_shared_memory_files()
    tensors = [("model.norm.weight", torch.randn(5)), ("lm_head.weight", torch.randn(3, 2).to(torch.bfloat16))]
    buf = torch.empty(sum(hx.nbytes(t) for _, t in tensors), dtype=torch.uint8).share_memory_()
    packed = hx.pack(tensors, buf)
    got = pickle.loads(base64.b64decode(ipc_wire.sglang_payload(packed)))
    flat, meta = got["flattened_tensor"], got["metadata"]
    assert isinstance(meta[0], SimpleNamespace)  # no sglang in the trainer venv: the field-compatible stand-in
    for (name, t), m in zip(tensors, meta):
        rebuilt = flat[m.start_idx:m.end_idx].view(m.dtype).reshape(m.shape)
        assert m.name == name and m.numel == m.end_idx - m.start_idx and torch.equal(rebuilt, t)
    buf[0:4] = 0  # shared, not copied: the engine reads the trainer's memory
    assert torch.equal(flat[0:4], torch.zeros(4, dtype=torch.uint8))
