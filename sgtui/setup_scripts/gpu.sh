#!/usr/bin/env bash
# GPU box with PyPI access: one venv per engine (vLLM and SGLang pin different torch builds),
# each with the runner's deps (httpx, orjson). Idempotent via stamp files.
# Versions match gpu/*.txt (the sets measured on H100 with torch 2.11 + CUDA 13).
# SGTUI_ENGINES (space or comma separated, default "vllm sglang") picks the engines.
# Air-gapped GPU hosts: gpu/install_offline.sh (wheels carried in), not this script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VLLM_VERSION="${SGTUI_VLLM_VERSION:-0.26.0}"
SGLANG_VERSION="${SGTUI_SGLANG_VERSION:-0.5.17}"
engines="${SGTUI_ENGINES:-vllm sglang}"
engines="${engines//,/ }"

install_vllm() { pip_in "$1" "vllm==$VLLM_VERSION" httpx orjson; }
install_sglang() { pip_in "$1" "sglang[all]==$SGLANG_VERSION" httpx orjson; }

for v in $engines; do
  case "$v" in
    vllm) make_venv vllm "$cache/venvs/vllm" "vLLM $VLLM_VERSION" install_vllm ;;
    sglang) make_venv sglang "$cache/venvs/sglang" "SGLang $SGLANG_VERSION" install_sglang ;;
    *) echo "setup: unknown engine $v (expected vllm, sglang)" >&2; exit 2 ;;
  esac
  # The megatron-core trainer (training mode) runs, unless --trainer-python says otherwise, with the runner's
  # interpreter: give the engine venvs megatron-core (pure Python; torch comes from the engine) and safetensors.
  # Pass one --trainer-python for both backends to have them train with the very same interpreter.
  "$cache/venvs/$v/bin/python" -c "import megatron.core, safetensors, tokenizers" 2>/dev/null ||
    pip_in "$cache/venvs/$v" megatron-core safetensors tokenizers
done
