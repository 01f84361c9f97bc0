#!/usr/bin/env bash
# On the GPU host, in the device call that carries the last piece (.gpu/p04, .gpu/w, .gpu/src.tar; the
# others are in /tmp/w already, see pack_vllm_site.sh): unpack vLLM 0.26, build the ~1.1B random-weight
# model, record a vllm:sleep1 session (LoRA sync) into $OUT/s. How sessions/*-vllm-sleep1-h200 was made.
set -uo pipefail
t0=$(date +%s)
cp .gpu/p0* /tmp/w/ && ls /tmp/w  # the piece(s) carried by this call
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tools .gpu/w/*.whl || exit 1
mkdir -p /tmp/site /tmp/src && tar xf .gpu/src.tar -C /tmp/src
if command -v zstd >/dev/null; then cat /tmp/w/p0* | zstd -d --long=27 -q | tar xf - -C /tmp/site
else cat /tmp/w/p0* | PYTHONPATH=/tmp/tools python3 -c "
import sys, tarfile, zstandard
r = zstandard.ZstdDecompressor(max_window_size=2**27).stream_reader(sys.stdin.buffer)
tarfile.open(fileobj=r, mode='r|').extractall('/tmp/site')"; fi
ls /tmp/site | wc -l; echo "unpacked at $(( $(date +%s) - t0 )) s"
cat > /tmp/vllm-python <<'EOW'
#!/usr/bin/env bash
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/tmp/site"
exec python3 "$@"
EOW
chmod +x /tmp/vllm-python
export PYTHONPATH=/tmp/src:/tmp/tools PYTHONUNBUFFERED=1
cd /tmp/src
python3 -m sgtui.runner.tinymodel --out /tmp/m1b --layers 16 --hidden 2048 --heads 32 --kv-heads 8 \
  --intermediate 8192 --dtype bfloat16 --lora-rank 16 | tail -2
echo "model at $(( $(date +%s) - t0 )) s"; nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
mkdir -p "$OUT/s"
timeout "${RUN_LIMIT:-430}" python3 -m sgtui.cli --no-ui --run vllm:sleep1 --model /tmp/m1b --vllm-python /tmp/vllm-python \
  --num-steps 3 --num-rollouts 64 --concurrency 64 --max-input-tokens 256 --max-output-tokens 128 \
  --gpu-memory-utilization 0.5 --sim-train-mib 8192 --sim-train-seconds 3 --vllm-args "--enforce-eager" \
  --export txt -o "$OUT/s" 2>&1 | tail -60
echo "done at $(( $(date +%s) - t0 )) s"
for f in $(find "$OUT/s" -name '*server*.log' -o -name 'engine*.log' | head -2); do tail -c 200000 "$f" > "$OUT/$(basename "$f")"; done
ls -la "$OUT" "$OUT/s"
