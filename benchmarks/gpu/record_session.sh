#!/usr/bin/env bash
# Record the GPU session of issues 4/5 on an air-gapped GPU host with torch 2.11+cu130 (how the bundled
# sessions/*-gpu-* were made). Expects the wheel sets of setup/gpu/*.txt, downloaded elsewhere with
# `pip download --no-deps`, as tar pieces in $W (vllm.tar.*, sglang.tar.*). Runs in the background
# (setsid) so that it survives the command that started it; poll /tmp/gpu-run.log.
set -euo pipefail
W="${W:-/tmp/w}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$PWD"
mkdir -p "$W/x" /tmp/sg
[ -d "$W/x/vllm" ] || cat "$W"/vllm.tar.* | tar xf - -C "$W/x"
[ -d "$W/x/sglang" ] || cat "$W"/sglang.tar.* | tar xf - -C "$W/x"
[ -x /tmp/sg/vllm-python ] || bash setup/gpu/install_offline.sh vllm "$W/x/vllm" /tmp/sg >/dev/null
[ -x /tmp/sg/sglang-python ] || bash setup/gpu/install_offline.sh sglang "$W/x/sglang" /tmp/sg >/dev/null
[ -d /tmp/sg/core/orjson ] || python3 -m pip install -q --no-index --no-deps --target /tmp/sg/core "$W"/x/sglang/orjson-*.whl
model=/tmp/m1b
[ -f "$model/sgtui-tinymodel.json" ] || PYTHONPATH="$repo" python3 -m sgtui.runner.tinymodel --out "$model" \
  --layers 16 --hidden 2048 --heads 32 --kv-heads 8 --intermediate 8192 --dtype bfloat16 --lora-rank 16
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
setsid nohup env PYTHONPATH="$repo:/tmp/sg/core" PYTHONUNBUFFERED=1 python3 -m sgtui.cli --no-ui \
  --run vllm:sleep1 --run vllm:sleep2 --run vllm:restart --run sglang:release --run sglang:restart \
  --model "$model" --vllm-python /tmp/sg/vllm-python --sglang-python /tmp/sg/sglang-python \
  --num-steps 3 --num-rollouts 64 --concurrency 64 --max-input-tokens 256 --max-output-tokens 128 \
  --gpu-memory-utilization 0.5 --sim-train-mib 8192 --sim-train-seconds 3 \
  --vllm-args "--enforce-eager" \
  --sglang-args "--sampling-backend pytorch --cuda-graph-backend-decode=disabled --cuda-graph-backend-prefill=disabled" \
  --export txt,json,md,trace -o /tmp/sessions "$@" > /tmp/gpu-run.log 2>&1 < /dev/null &
echo "started: tail -f /tmp/gpu-run.log"
