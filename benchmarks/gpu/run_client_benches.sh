#!/usr/bin/env bash
# The two measuring benchmarks of issue 12 on a GPU host, within 540 s in all (device time is scarce).
#
# Runs benchmarks/client_vs_vllm_bench.py, then benchmarks/observer_effect.py, each with ONE vLLM server
# (default engine flags, CUDA graphs on) for all its rounds; their stdout+stderr go to
# $OUT/client_vs_vllm_bench.txt and $OUT/observer_effect.txt. Both servers share one VLLM_CACHE_ROOT, so the
# second start reuses the first one's torch.compile cache. `timeout` guards each; each benchmark's
# --budget-s stops starting rounds that would not finish in time (the rounds done are still reported), and
# its SIGTERM handler stops its server when the guard fires.
#
# Run from the repository copy:  OUT=/some/dir bash benchmarks/gpu/run_client_benches.sh
# Environment: PY (default /tmp/vllm-python), MODEL (default /tmp/m1b), OUT (required), TOTAL_S (default 540),
# DEVICE (default cuda; cpu only to smoke-test this script with the CPU venv and tiny model).
set -u
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the output directory}"
PY=${PY:-/tmp/vllm-python}
MODEL=${MODEL:-/tmp/m1b}
TOTAL_S=${TOTAL_S:-540}
DEVICE=${DEVICE:-cuda}
CACHE=${VLLM_BENCH_CACHE:-/tmp/sgtui-bench-vllm-cache}
export PYTHONPATH="$PWD:/tmp/tools${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$CACHE"
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >"$OUT/gpu_before.txt" 2>&1 || true

# client_vs_vllm_bench: at most half the time (cold start 60-225 s, then ~25 s a round pair)
c_limit=$(( TOTAL_S * 53 / 100 ))
timeout -k 10 "$c_limit" "$PY" benchmarks/client_vs_vllm_bench.py --device "$DEVICE" --python "$PY" --model "$MODEL" \
    --vllm-cache "$CACHE" --budget-s $(( c_limit - 20 )) >"$OUT/client_vs_vllm_bench.txt" 2>&1
echo "exit code $? after $(( $(date +%s) - start )) s" >>"$OUT/client_vs_vllm_bench.txt"

# observer_effect: whatever is left, less a margin for the server's stop
left=$(( TOTAL_S - ($(date +%s) - start) - 15 ))
if [ "$left" -gt 60 ]; then
  timeout -k 10 "$left" "$PY" benchmarks/observer_effect.py --device "$DEVICE" --python "$PY" --model "$MODEL" \
      --vllm-cache "$CACHE" --budget-s $(( left - 20 )) >"$OUT/observer_effect.txt" 2>&1
  echo "exit code $? after $(( $(date +%s) - start )) s" >>"$OUT/observer_effect.txt"
else
  echo "skipped: only ${left} s left" >"$OUT/observer_effect.txt"
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >"$OUT/gpu_after.txt" 2>&1 || true
