#!/usr/bin/env bash
# The megatron-core trainer on a machine without a GPU (tests, CPU training mode): its own venv.
# megatron-core 0.16.1 is the newest release for Python 3.11; it runs on CPU with gloo after the
# shims in sgtui/runner/trainer/cpu_shims.py. torch 2.13.0 is the CPU wheel pip finds on local disk
# (the same one vllm_cpu.sh uses). sgtui itself is not installed: the runner puts the sgtui package on
# PYTHONPATH when it launches the trainer (sgtui/pkgpath.py), as tiny_model.sh does.
# Idempotent: a stamp file keyed by versions makes a second run instant.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MCORE_VERSION=0.16.1
TORCH_VERSION=2.13.0
venv="$cache/venvs/trainer-cpu-mcore$MCORE_VERSION-torch$TORCH_VERSION"

install() {
  # peft pulls accelerate (imported by peft at module level); transformers for the HF model in the
  # logits-equality tests and the tokenizer; pytest so worker-side tests can run in this venv too.
  pip_in "$1" "torch==$TORCH_VERSION" "megatron-core==$MCORE_VERSION" numpy packaging \
    transformers tokenizers safetensors peft orjson psutil pytest  # psutil: sgtui.procinfo (the rank groups)
  # peft/accelerate may pull CUDA builds of torchvision; they break `transformers` imports
  # ("operator torchvision::nms does not exist") and nothing here needs them.
  pip_out "$1" torchvision torchaudio torchcodec
  "$1/bin/python" -c "import torch, megatron.core, transformers, peft, safetensors, orjson, psutil" >&2
}
make_venv trainer "$venv" "megatron-core $MCORE_VERSION + torch $TORCH_VERSION CPU, ~1-2 min" install
