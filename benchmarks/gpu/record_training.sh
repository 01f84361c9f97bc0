#!/usr/bin/env bash
# Issue 6 on an air-gapped GPU host with torch 2.11+cu130 (how sessions/*-training-gpu-* was made):
#   1. the megatron-core trainer alone, TP=1 and (with 2+ GPUs) TP=2: benchmarks/gpu/trainer_check.py;
#   2. the whole loop in training mode on one GPU: real vLLM serving the ~1.1B test model (random bf16
#      weights saved once as safetensors), the megatron trainer loading the same weights, GRPO steps on
#      its rollouts, the adapter hot-loaded back each step, shared placement with sleep offload.
# Expects in $W: vllm.tar.* (the wheels of setup/gpu/vllm-*.txt, downloaded elsewhere with `pip download
# --no-deps`) and in $E: megatron_core-*.whl, peft-*.whl and core/*.whl (sgtui's own deps: orjson, typer,
# rich, httpx, nvidia-ml-py). Writes the session and its reports under $OUT (default /tmp/out).
set -euo pipefail
W="${W:-/tmp/w}"; E="${E:-.gpu/e}"; OUT="${OUT:-/tmp/out}"; STEPS="${STEPS:-4}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo="$PWD"
mkdir -p "$W/x" /tmp/sg "$OUT"
[ -d "$W/x/vllm" ] || cat "$W"/vllm.tar.* | tar xf - -C "$W/x"
[ -x /tmp/sg/vllm-python ] || bash setup/gpu/install_offline.sh vllm "$W/x/vllm" /tmp/sg >/dev/null
# sgtui's core deps and the trainer's (megatron-core is pure Python; torch, transformers come from the host).
[ -d /tmp/sg/core/megatron ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sg/core \
  "$E"/core/*.whl "$E"/megatron_core-*.whl "$E"/peft-*.whl
export PYTHONPATH="$repo:/tmp/sg/core" PYTHONUNBUFFERED=1
model=/tmp/m1b
[ -f "$model/sgtui-tinymodel.json" ] || python3 -m sgtui.runner.tinymodel --out "$model" \
  --layers 16 --hidden 2048 --heads 32 --kv-heads 8 --intermediate 8192 --dtype bfloat16
nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv
if [ "${SKIP_CHECK:-0}" != 1 ]; then
  tps=1; [ "$(nvidia-smi -L | wc -l)" -ge 2 ] && tps=1,2
  python3 benchmarks/gpu/trainer_check.py --model "$model" --tps "$tps" 2>&1 | tee "$OUT/trainer_check.txt"
fi
python3 -m sgtui.cli --no-ui --run vllm:sleep1 --mode training --trainer megatron --gpus 0 \
  --model "$model" --vllm-python /tmp/sg/vllm-python \
  --num-steps "$STEPS" --num-rollouts 64 --concurrency 64 --max-input-tokens 256 --max-output-tokens 128 \
  --gpu-memory-utilization 0.5 --vllm-args "--enforce-eager" \
  --export txt,json,md --output "$OUT" "$@" 2>&1 | tee "$OUT/training-run.log"
