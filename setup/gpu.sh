#!/usr/bin/env bash
# GPU box with PyPI access: one venv per engine (vLLM and SGLang pin different torch builds),
# each with the runner's deps (httpx, orjson). Idempotent via stamp files.
# Versions match setup/gpu/*.txt (the sets measured on H100 with torch 2.11 + CUDA 13).
set -euo pipefail
cache="${SGTUI_CACHE:-$HOME/.cache/sgtui}"
py="${PYTHON:-python3}"
VLLM_VERSION="${SGTUI_VLLM_VERSION:-0.26.0}"
SGLANG_VERSION="${SGTUI_SGLANG_VERSION:-0.5.17}"

make_venv() {  # name, pip requirement...
  local name="$1"; shift
  local venv="$cache/venvs/$name"
  local stamp="$venv/.sgtui-ok"
  if [ -f "$stamp" ]; then return 0; fi
  echo "setup: creating $venv" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$@" httpx orjson
  touch "$stamp"
}

make_venv vllm "vllm==$VLLM_VERSION"
make_venv sglang "sglang[all]==$SGLANG_VERSION"

# The megatron-core trainer (training mode) runs, unless --trainer-python says otherwise, with the runner's
# interpreter: give both engine venvs megatron-core (pure Python; torch comes from the engine) and safetensors.
# Pass one --trainer-python for both backends to have them train with the very same interpreter.
for v in vllm sglang; do
  "$cache/venvs/$v/bin/python" -c "import megatron.core, safetensors, tokenizers" 2>/dev/null ||
    "$cache/venvs/$v/bin/python" -m pip install -q megatron-core safetensors tokenizers
done
