"""Run in the trainer venv: a tiny Qwen2 (q/k/v biases, tied embeddings, rope_theta 1e6) with a LoRA adapter.

    python tests/trainer/make_qwen2.py OUT_DIR TOKENIZER_FROM_DIR

Covers what the tiny Llama does not: the fused-QKV bias layout and the
shared embedding/output weight (no lm_head.weight in the checkpoint). Biases
are drawn large so that a wrong bias layout shows in the logits.
"""

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from sgtui.runner.tinymodel import build_adapter


def main() -> None:
    out, tok_from = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok_from / f, out / f)
    cfg = Qwen2Config(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
                      rope_theta=1000000.0, tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"],
                      torch_dtype="float32")
    torch.manual_seed(3)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(out)
    build_adapter(out / "adapters" / "initial", cfg, rank=8, seed=5)


if __name__ == "__main__":
    main()
