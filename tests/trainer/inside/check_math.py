"""Worker-side unit checks that need torch (run in the trainer venv by tests/trainer/test_grpo.py).

Named check_*.py so that sgtui's own test run (no torch there) does not collect it directly.
"""

import torch

from sgtui.runner.trainer import batch as batchmod
from sgtui.runner.trainer import grpo
from sgtui.runner.trainer import peft_export as pe
from sgtui.runner.trainer.mcore_model import HFShape, fuse_qkv_shard, mask_padded_vocab, padded_vocab


def test_loss_gradient_is_the_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.1]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([1.5, -0.5])
    parts = grpo.grpo_loss(logp, mask, adv, total_tokens=4)
    parts.loss.backward()
    expect = -(adv[:, None] * mask) / 4
    assert torch.allclose(logp.grad, expect)
    assert parts.tokens == 4
    assert abs(parts.pg - float(-(1.5 * (-2.5) + -0.5 * (-1.0)) / 4)) < 1e-6


def test_loss_normalises_by_the_step_token_count_so_micro_batches_add_up():
    logp = torch.randn(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    adv = torch.randn(4)
    n = int(mask.sum())
    whole = grpo.grpo_loss(logp, mask, adv, n).loss
    halves = grpo.grpo_loss(logp[:2], mask[:2], adv[:2], n).loss + grpo.grpo_loss(logp[2:], mask[2:], adv[2:], n).loss
    assert torch.allclose(whole, halves, atol=1e-6)


def test_kl_k3_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0, -0.1])
    assert torch.allclose(grpo.kl_k3(logp, logp), torch.zeros(3))
    assert (grpo.kl_k3(logp, logp + torch.tensor([0.5, -0.5, 1.0])) > 0).all()


def test_kl_term_is_added_with_its_coefficient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]])
    mask = torch.ones(1, 2)
    adv = torch.tensor([0.0])
    parts = grpo.grpo_loss(logp, mask, adv, 2, ref_logp=ref, kl_coef=0.1)
    kl = float(grpo.kl_k3(logp.detach(), ref).mean())
    assert abs(parts.kl - kl) < 1e-6 and abs(float(parts.loss) - 0.1 * kl) < 1e-6


def test_collate_masks_exactly_the_completion_predictions():
    items = [batchmod.Encoded(input_ids=[5, 6, 7, 8, 9], prompt_len=2, advantage=1.0,
                              engine_logprobs=[-0.5, -1.5, -2.5]),
             batchmod.Encoded(input_ids=[1, 2, 3], prompt_len=1, advantage=-1.0)]
    mb = batchmod.collate(items, pad_id=0, multiple=8)
    assert mb.ids.shape == (2, 8) and mb.ids[1, 3:].eq(0).all()
    # position t predicts token t+1: completion tokens 7,8,9 are predicted at positions 1,2,3
    assert mb.mask[0].tolist() == [0, 1, 1, 1, 0, 0, 0]
    assert mb.mask[1].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert mb.adv.tolist() == [1.0, -1.0]
    # the engine's logprobs sit at the same positions as the tokens they score; none given, none masked in
    assert mb.engine_logp[0].tolist() == [0, -0.5, -1.5, -2.5, 0, 0, 0]
    assert mb.engine_mask[0].tolist() == mb.mask[0].tolist()
    assert mb.engine_mask[1].sum() == 0


def _full_adapter(layers=2, r=4, h=8, q=8, kv=4, inter=12):
    dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    out = {}
    for i in range(layers):
        for t, (fi, fo) in dims.items():
            out[pe.key(i, t, "A")] = torch.randn(r, fi)
            out[pe.key(i, t, "B")] = torch.randn(fo, r)
    return out


def test_split_then_merge_is_the_identity_and_shards_follow_megatron():
    full = _full_adapter()
    shards = [pe.split(full, 2, r) for r in range(2)]
    assert shards[0][pe.key(0, "q_proj", "B")].shape == (4, 4)  # column: B rows split
    assert shards[0][pe.key(0, "q_proj", "A")].shape == (4, 8)  # column: A replicated
    assert shards[1][pe.key(1, "down_proj", "A")].shape == (4, 6)  # row: A columns split
    assert shards[1][pe.key(1, "down_proj", "B")].shape == (8, 4)  # row: B replicated
    merged = pe.merge(shards)
    assert set(merged) == set(full) and all(torch.equal(merged[k], full[k]) for k in full)


def test_peft_write_read_round_trip(tmp_path):
    full = _full_adapter()
    pe.write(tmp_path / "a", full, 4, 8, list(pe.BLOCK))
    cfg, back = pe.read(tmp_path / "a")
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and cfg["peft_type"] == "LORA"
    assert all(torch.equal(back[k], full[k]) for k in full)
    pe.check_compatible(cfg, back, 4, 8, list(pe.BLOCK), layers=2)
    try:
        pe.check_compatible(cfg, back, 8, 16, list(pe.BLOCK), layers=2)
    except pe.AdapterMismatch as e:
        assert "r=4" in str(e)
    else:
        raise AssertionError("a rank mismatch must be refused")


def test_fused_qkv_shards_concatenate_to_the_tp1_layout():
    shape = HFShape(arch="LlamaForCausalLM", vocab=10, hidden=8, layers=1, heads=4, kv_heads=2, head_dim=2,
                    intermediate=8, eps=1e-6, rope_theta=1e4, tie=False, qkv_bias=False, max_positions=16,
                    dtype="float32")
    q, k, v = torch.randn(8, 8), torch.randn(4, 8), torch.randn(4, 8)
    tp1 = fuse_qkv_shard([q, k, v], shape, 1, 0)
    assert torch.equal(tp1[:4], q[:4]) and torch.equal(tp1[4:6], k[:2]) and torch.equal(tp1[6:8], v[:2])
    tp2 = torch.cat([fuse_qkv_shard([q, k, v], shape, 2, r) for r in range(2)])
    assert torch.equal(tp1, tp2)


def test_padded_vocabulary_logits_are_masked():
    assert padded_vocab(10, 4) == 12
    logits = torch.zeros(1, 1, 6)
    masked = mask_padded_vocab(logits, vocab=10, tp=2, rank=1)  # this rank holds ids 6..11; 10, 11 are padding
    assert torch.isinf(masked[..., 4:]).all() and not torch.isinf(masked[..., :4]).any()


def test_tokenizer_without_transformers_matches_hf_and_renders_chat_prompts():
    import os
    from pathlib import Path

    from transformers import AutoTokenizer

    model = Path(os.environ["SGTUI_TEST_MODEL"])
    tok, hf = batchmod.Tokenizer(model), AutoTokenizer.from_pretrained(str(model))
    text = "how many apples are left? seven 42."
    assert tok.encode(text) == hf.encode(text, add_special_tokens=False)
    assert tok.pad_token_id == hf.pad_token_id
    msgs = [{"role": "user", "content": "how many apples"}]
    samples = [batchmod.Sample(prompt=repr(msgs), completion=" seven", group=0, reward=1.0)]
    (enc,) = batchmod.encode(samples, tok, max_len=64)
    want = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert enc.input_ids[:enc.prompt_len] == hf.encode(want, add_special_tokens=False)
    assert enc.input_ids[enc.prompt_len:] == hf.encode(" seven", add_special_tokens=False)
