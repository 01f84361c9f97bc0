"""Run in the trainer venv: logits of the Hugging Face model with a PEFT adapter, for comparison.

    python tests/trainer/hf_logits.py MODEL_DIR ADAPTER_DIR MEGATRON_LOGITS.pt

Loads the model with transformers and the adapter with `peft` (the reference
implementation engines follow), runs the token ids the megatron trainer
dumped, and prints one JSON line: max |difference| against the megatron
logits, the scale of the logits, and how far the adapter moves them (so a
test can tell that the adapter was applied at all).
"""

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main() -> None:
    model_dir, adapter_dir, dump = sys.argv[1:4]
    ref = torch.load(dump, weights_only=True)
    ids = torch.tensor([ref["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    base.eval()
    with torch.no_grad():
        base_logits = base(ids).logits[0].float()
    model = PeftModel.from_pretrained(base, adapter_dir)
    model.eval()
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    mg = ref["logits"].float()
    print(json.dumps({
        "max_abs_diff": float((logits - mg).abs().max()),
        "logit_scale": float(logits.abs().max()),
        "adapter_effect": float((logits - base_logits).abs().max()),
        "tokens": len(ref["input_ids"]),
    }))


if __name__ == "__main__":
    main()
