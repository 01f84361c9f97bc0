#!/usr/bin/env bash
# On the GPU host, in any call after record_rl_loop.sh started a recording: wait up to WAIT_S seconds
# (default 0) for it to end, print where it is and the log's tail, and copy what it has into $OUT:
#   $OUT/rl_loop.log           the log (its last 8 MiB)
#   $OUT/rl-<tag>.tar.gz       /tmp/rl/s-<tag>: the session .jsonl, its reports, the runs' logs (logs cut to
#                              their last 4 MiB; no weights, adapters or caches); rl-<tag>.partial.tar.gz
#                              while that run is still going (so a lost machine loses less)
#   $OUT/rl-<tag>.txt          the text report, once there is one
# At most 5 files: the device tool brings back 8, 16 MiB each. A fresh machine has no
# /tmp/rl_loop.started: then it prints MACHINE_LOST and exits 3 (everything must be staged again).
# Usage: poll_rl_loop.sh [WAIT_S]
set -uo pipefail
OUT="${OUT:-/tmp/rl_out}"
RL=/tmp/rl LOG=/tmp/rl_loop.log
wait_s="${1:-0}"
mkdir -p "$OUT"
if [ ! -f /tmp/rl_loop.started ]; then
  echo "MACHINE_LOST: no /tmp/rl_loop.started on this machine (a fresh one: stage every piece again)"
  find /tmp/w -maxdepth 1 -name 'p[0-9]*' -printf '%f ' 2>/dev/null
  exit 3
fi
started=$(cat /tmp/rl_loop.started)
end=$(( SECONDS + wait_s ))
while [ "$SECONDS" -lt "$end" ] && [ ! -f /tmp/rl_loop.done ]; do sleep 5; done

status="running"
[ -f /tmp/rl_loop.done ] && status="done"
echo "== $status, $(( $(date +%s) - started )) s since start $(for f in /tmp/rl_loop.[ab].rc; do [ -f "$f" ] && printf ' %s=%s' "$(basename "$f" .rc | sed 's/rl_loop.//')" "$(cat "$f")"; done)"
nvidia-smi --query-gpu=memory.used,memory.total,utilization.gpu --format=csv,noheader 2>/dev/null
echo "== log tail"
tail -n "${TAIL_LINES:-60}" "$LOG" 2>/dev/null | cut -c1-400

tail -c 8388608 "$LOG" > "$OUT/rl_loop.log" 2>/dev/null

limit=$(( 15 * 1048576 ))
for src in "$RL"/s-[ab]; do
  [ -d "$src" ] || continue
  tag="${src##*-}"
  name="rl-$tag"
  [ -f "/tmp/rl_loop.$tag.rc" ] || name="rl-$tag.partial"
  stage="/tmp/rl_pack/s-$tag"
  rm -rf /tmp/rl_pack && mkdir -p "$stage"
  (cd "$src" && find . -type f ! -name '*.safetensors' ! -name '*.pt' ! -name '*.pth' ! -name '*.bin' \
     ! -name '*.npy' ! -path '*-cache/*' ! -path '*/.cache/*' -print0) |
  while IFS= read -r -d '' f; do
    mkdir -p "$stage/$(dirname "$f")"
    if [[ "$f" == *.log ]] && [ "$(stat -c %s "$src/$f")" -gt 4194304 ]; then
      tail -c 4194304 "$src/$f" > "$stage/$f"
    else
      cp "$src/$f" "$stage/$f"
    fi
  done
  rm -f "$OUT/rl-$tag".*tar.gz
  tar czf "$OUT/$name.tar.gz" -C /tmp/rl_pack "s-$tag"
  if [ "$(stat -c %s "$OUT/$name.tar.gz")" -gt "$limit" ]; then  # the session and its reports only
    echo "$name.tar.gz over 15 MiB: sessions and reports only"
    (cd /tmp/rl_pack && find "s-$tag" -maxdepth 1 -type f -print0 | tar czf "$OUT/$name.tar.gz" --null -T -)
  fi
  for r in "$src"/*.txt; do [ -f "$r" ] && cp "$r" "$OUT/rl-$tag.txt"; done
done
rm -rf /tmp/rl_pack
echo "== in \$OUT"
ls -la "$OUT"
[ "$status" = "done" ]  # exit 1 while it still runs
