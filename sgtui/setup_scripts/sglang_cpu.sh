#!/usr/bin/env bash
# SGLang on a machine without a GPU (tests, the CPU default): the real `sglang` server from PyPI.
# The wheel pins CUDA-only dependencies (torch 2.14.1 CUDA, flashinfer, sglang-kernel); installing it with
# --no-deps next to torch 2.13.0+cpu and the pure-Python packages it imports at module level gives a
# server that runs on CPU once sgtui/runner/cpu_compat/ supplies the few CUDA-only pieces (see its README).
# Idempotent: a stamp file keyed by version makes a second run instant.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SGLANG_VERSION=0.5.23
venv="$cache/venvs/sglang-cpu-$SGLANG_VERSION"

install() {
  pip_in "$1" torch==2.13.0
  pip_in "$1" --no-deps "sglang==$SGLANG_VERSION"
  # What sglang imports on the CPU serving path (its other requirements are CUDA-only or lazy).
  pip_in "$1" "transformers==5.19.0" "tokenizers==0.23.2" safetensors huggingface_hub \
    aiohttp anthropic "openai==2.8.0" "openai-harmony==0.0.4" "compressed-tensors==0.18.0" \
    fastapi "uvicorn>=0.51" uvloop "pyzmq>=25.1.2" msgspec "xgrammar==0.2.7" triton orjson \
    IPython gguf "soundfile==0.13.1" partial_json_parser pillow "prometheus-client>=0.20.0" psutil pybase64 \
    pydantic python-multipart requests scipy "sentencepiece==0.2.1" setproctitle tiktoken tqdm \
    einops interegular "llguidance>=1.7.6,<2" ninja numpy packaging regex xxhash zstandard watchfiles \
    "python-dateutil<3" distro easydict blobfile "mistral_common>=1.11.5" "apache-tvm-ffi==0.1.11" \
    "outlines==0.1.11" nvidia-ml-py pyyaml dill \
    httpx
  # SGLang imports torchvision at module level; the PyPI build is CUDA-only, so it goes in without its deps
  # and sgtui/runner/cpu_compat/sitecustomize.py defines the two op schemas it needs to import beside torch+cpu.
  pip_in "$1" --no-deps "torchvision==0.28.0"
}
make_venv sglang "$venv" "SGLang $SGLANG_VERSION on CPU, ~1-2 min" install
