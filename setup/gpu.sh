#!/usr/bin/env bash
# GPU box with PyPI access: one venv per engine (vLLM and SGLang pin different torch builds),
# each with the runner's deps (httpx, orjson). Idempotent via stamp files.
# Versions match setup/gpu/*.txt (the sets measured on H100 with torch 2.11 + CUDA 13).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VLLM_VERSION="${SGTUI_VLLM_VERSION:-0.26.0}"
SGLANG_VERSION="${SGTUI_SGLANG_VERSION:-0.5.17}"

install_vllm() { pip_in "$1" "vllm==$VLLM_VERSION" httpx orjson; }
install_sglang() { pip_in "$1" "sglang[all]==$SGLANG_VERSION" httpx orjson; }

make_venv "$cache/venvs/vllm" "vLLM $VLLM_VERSION" install_vllm
make_venv "$cache/venvs/sglang" "SGLang $SGLANG_VERSION" install_sglang

# The megatron-core trainer (training mode) runs, unless --trainer-python says otherwise, with the runner's
# interpreter: give both engine venvs megatron-core (pure Python; torch comes from the engine) and safetensors.
# Pass one --trainer-python for both backends to have them train with the very same interpreter.
for v in vllm sglang; do
  "$cache/venvs/$v/bin/python" -c "import megatron.core, safetensors, tokenizers" 2>/dev/null ||
    "$cache/venvs/$v/bin/python" -m pip install -q megatron-core safetensors tokenizers
done
