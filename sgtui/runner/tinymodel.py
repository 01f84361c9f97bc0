"""Build the tiny built-in model: a Llama with random weights, a locally trained tokenizer, a LoRA adapter.

Model weights cannot be downloaded on the machines sgtui is tested on, yet the
engines must serve a real Hugging Face model directory. This makes one from
scratch, deterministically from a seed: `config.json` + `model.safetensors`
(random weights, float32), a byte-level BPE `tokenizer.json` trained with
`tokenizers` on generated text (ChatML chat template), and a random PEFT
LoRA adapter under `adapters/initial` whose B matrices are non-zero, so that
loading it visibly changes the output (which is how LoRA sync is verified).

Usage: python -m sgtui.runner.tinymodel --out DIR [--seed 0] [--layers 2] [--hidden 128] ...
(the ~1.1B GPU test config: --layers 16 --hidden 2048 --heads 32 --kv-heads 8 --intermediate 8192 --dtype bfloat16)
Runs inside an engine venv (needs torch, transformers, tokenizers, safetensors).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = (
    "the a of to and in is it that for on with as was at by be this from or have an are not but what all were when "
    "we there can been has more if will one their which do about out up so time them some would into two could "
    "step reward model train rollout policy gradient token answer question number apple orange seven eight nine "
    "three four five six ten hundred plus minus times equals total each how many left more less sum"
).split()


def _corpus(seed: int, n_lines: int = 4000) -> list[str]:
    rnd = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(5, 30))]
        nums = [str(rnd.randint(0, 999)) for _ in range(rnd.randint(0, 3))]
        lines.append(" ".join(words + nums) + rnd.choice([".", "?", "!", ""]))
    return lines


def build_tokenizer(out: Path, vocab_size: int, seed: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "model_max_length": 4096,
                "chat_template": CHATML,
                "clean_up_tokenization_spaces": False,
            },
            indent=1,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=1)
    )


def build(out: Path, seed: int = 0, layers: int = 2, hidden: int = 128, heads: int = 2, kv_heads: int = 2,
          intermediate: int = 256, vocab_size: int = 2048, lora_rank: int = 8, max_positions: int = 4096,
          dtype: str = "float32") -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build_tokenizer(tmp, vocab_size, seed)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp / "tokenizer.json"))
    eos_id = tok.token_to_id("<|im_end|>")
    pad_id = tok.token_to_id("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        torch_dtype=dtype,
        architectures=["LlamaForCausalLM"],  # engines pick the model class from this
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    # Safetensors written by hand: save_pretrained's extra metadata varies across transformers versions.
    state = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(tmp)
    (tmp / "generation_config.json").write_text(
        json.dumps({"eos_token_id": eos_id, "pad_token_id": pad_id, "do_sample": False}, indent=1)
    )
    build_adapter(tmp / "adapters" / "initial", config, rank=lora_rank, seed=seed + 1)
    (tmp / "sgtui-tinymodel.json").write_text(
        json.dumps({"seed": seed, "layers": layers, "hidden": hidden, "vocab": tok.get_vocab_size(), "lora_rank": lora_rank})
    )
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def build_adapter(out: Path, config, rank: int = 8, alpha: int = 16, seed: int = 1, scale: float = 0.05) -> Path:
    """A PEFT-format LoRA adapter with random A and B, so it changes the model's output."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_out = config.num_attention_heads * head_dim
    kv_out = config.num_key_value_heads * head_dim
    shapes = {
        "q_proj": (hidden, q_out, "self_attn"),
        "k_proj": (hidden, kv_out, "self_attn"),
        "v_proj": (hidden, kv_out, "self_attn"),
        "o_proj": (q_out, hidden, "self_attn"),
        "gate_proj": (hidden, config.intermediate_size, "mlp"),
        "up_proj": (hidden, config.intermediate_size, "mlp"),
        "down_proj": (config.intermediate_size, hidden, "mlp"),
    }
    tensors = {}
    for layer in range(config.num_hidden_layers):
        for name, (fan_in, fan_out, block) in shapes.items():
            prefix = f"base_model.model.model.layers.{layer}.{block}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=gen) * scale
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=gen) * scale
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": None,
                "r": rank,
                "lora_alpha": alpha,
                "lora_dropout": 0.0,
                "bias": "none",
                "target_modules": LORA_TARGETS,
                "fan_in_fan_out": False,
                "inference_mode": True,
                "modules_to_save": None,
                "use_rslora": False,
                "use_dora": False,
            },
            indent=1,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sgtui.runner.tinymodel", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--lora-rank", type=int, default=8)
    args = p.parse_args(argv)
    build(args.out, seed=args.seed, layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
          intermediate=args.intermediate, lora_rank=args.lora_rank, dtype=args.dtype)
    print(args.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
