"""`python -m sgtui.runner.tinymodel` with the random weights drawn on the GPU.

On a CPU torch draws normal weights on one thread (~7 ns each here), so a 7B-class shape takes minutes
there; on the GPU seconds (writing the 13 GB safetensors then dominates). The builder stays tinymodel's
own: only `LlamaForCausalLM.__init__` runs under `torch.device("cuda")` (parameters allocated and
initialised there). The tokenizer, the
adapter (drawn with tinymodel's CPU generator) and the safetensors writer (which copies each tensor to the
host) are unchanged, and the weights are still random bf16 from the seed, only from the GPU's generator.

Usage: python3 benchmarks/gpu/tinymodel_gpu.py [--device auto|cuda|cpu] --out DIR [tinymodel flags]
(auto: the GPU when torch sees one). Needs sgtui on PYTHONPATH, torch, transformers, tokenizers, safetensors.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    device = "auto"
    if argv[:1] == ["--device"]:
        device, argv = argv[1], argv[2:]
    import torch
    import transformers

    from sgtui.runner import tinymodel

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    built = []
    if device != "cpu":
        # The class itself is patched: transformers' lazy module hands out the class, not its attribute.
        cls = transformers.LlamaForCausalLM
        plain_init = cls.__init__

        def init_on_device(self, *args, **kwargs):
            with torch.device(device):
                plain_init(self, *args, **kwargs)
            built.append(next(self.parameters()).device)

        cls.__init__ = init_on_device
    t = time.time()
    rc = tinymodel.main(argv)
    where = str(built[0]) if built else "cpu"
    print(f"tinymodel_gpu: weights drawn on {where}, built in {time.time() - t:.1f} s", file=sys.stderr)
    if device != "cpu" and not built:
        print(f"tinymodel_gpu: the {device} constructor was not used (tinymodel changed?)", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
