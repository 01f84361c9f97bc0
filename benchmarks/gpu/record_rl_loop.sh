#!/usr/bin/env bash
# The whole RL loop in training mode on the offline GPU host (torch 2.11+cu130, Python 3.12): vLLM 0.26
# sleep1 against SGLang 0.5.17 release, megatron-core trainer, default engine flags (CUDA graphs on).
# Pieces come from pack_sites.sh; the order of the device calls is in send_pieces.md. Verbs:
#
#   record_rl_loop.sh stage [a|b|ab]  every call but the last: copy the carried piece(s) into /tmp/w and
#                                     say which are still missing; with a tag, also start building that
#                                     model in the background (weights drawn on the GPU) meanwhile
#   record_rl_loop.sh a|b|ab [WAIT_S] the last call: stage the carried piece, check every piece against
#                                     .gpu/sums, install .gpu/w into /tmp/tools, unpack both sites into
#                                     /tmp/gpuw, write /tmp/vllm-python and /tmp/sglang-python, start the
#                                     recording in a session of its own (setsid), follow its log for
#                                     WAIT_S seconds (default 480) or until it ends, then poll_rl_loop.sh 0.
#                                     Called again (b after a, same warm machine) it unpacks nothing.
#
# Models (random bf16 weights saved as safetensors, the locally trained tokenizer, a rank-16 adapter):
#   a  /tmp/m1b  the ~1.1B Llama of the earlier sessions (16 layers, hidden 2048, 32/8 heads, ffn 8192)
#   b  /tmp/m7b  a Llama of Qwen2.5-7B's shape (28 layers, hidden 3584, 28/4 heads, ffn 18944): ~6.5B
#                parameters, as tinymodel makes only Llamas (no q/k/v biases) with the local ~1.5k-token
#                vocabulary, not Qwen's 152k
# each recorded as: sgtui --no-ui --mode training --run vllm:sleep1 --run sglang:release, 4 steps of 64
# rollouts (256 prompt / 512 output tokens, concurrency 64), memory fraction 0.5, export txt,json,md.
# On the host: sessions /tmp/rl/s-<tag>/, log /tmp/rl_loop.log, markers /tmp/rl_loop.started,
# /tmp/rl_loop.<tag>.rc (sgtui's exit code), /tmp/rl_loop.done; poll_rl_loop.sh copies them into $OUT.
# Env: RLW_RUNS, the --run flags (default "--run vllm:sleep1 --run sglang:release"; the full-weight sync
# session of issue 16: "--run vllm:sleep1+ipc --run sglang:release+ipc --run vllm:sleep1+disk
# --run sglang:release+disk", recorded on 2026-12-06; +ipc needs ray in the vLLM site, which vLLM 0.26's IPC
# weight transfer imports and preflight checks for: setup/gpu/vllm-*.txt lists it since then);
# LIMIT_A (default 900) and LIMIT_B (1500) seconds for each sgtui run; RLW_VLLM_CUTE=1 (see
# write_wrappers). For a dry run elsewhere:
# RLW_PIECES, RLW_SITES, RLW_TOOLS, RLW_SRC, RLW_BIN (paths), RLW_NO_ZSTD=1 (python zstandard), RLW_DRY=1
# (stop before the worker).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
W="${RLW_PIECES:-/tmp/w}" SITES="${RLW_SITES:-/tmp/gpuw}" TOOLS="${RLW_TOOLS:-/tmp/tools}"
SRC="${RLW_SRC:-/tmp/src}" BIN="${RLW_BIN:-/tmp}" RL=/tmp/rl MODELS=/tmp/models LOG=/tmp/rl_loop.log
t0="${RL_T0:-$(date +%s)}"
export RL_T0="$t0"
stamp() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - t0 ))s] $*"; }

model_dir() { case "$1" in a) echo /tmp/m1b ;; b) echo /tmp/m7b ;; esac; }
model_args() {
  case "$1" in
    a) echo --layers 16 --hidden 2048 --heads 32 --kv-heads 8 --intermediate 8192 --dtype bfloat16 --lora-rank 16 ;;
    b) echo --layers 28 --hidden 3584 --heads 28 --kv-heads 4 --intermediate 18944 --dtype bfloat16 --lora-rank 16 ;;
  esac
}
tags_of() {  # "ab" -> " a b"; anything but a, b, ab, ba is an error
  case "$1" in a | b) echo " $1" ;; ab | ba) echo " a b" ;; *) return 1 ;; esac
}

copy_src() {  # this call's sgtui and scripts to $SRC: later calls re-sync the working tree under a run
  # A carried .gpu/src (git-ignored: `git archive <commit> sgtui setup benchmarks pyproject.toml`) is used
  # instead of the working tree: a recording runs a landed commit while the tree here is mid-change.
  local from="$repo"
  [ -d "$repo/.gpu/src/sgtui" ] && from="$repo/.gpu/src"
  rm -rf "$SRC.new" "$SRC.old" && mkdir -p "$SRC.new" || return 1
  (cd "$from" && cp -a sgtui setup benchmarks pyproject.toml "$SRC.new/") || return 1
  echo "sgtui source: $from"
  if [ -d "$SRC" ]; then mv "$SRC" "$SRC.old"; fi
  mv "$SRC.new" "$SRC" && rm -rf "$SRC.old"
}

stage() {  # copy the pieces this call carries, check them; 0: all there, 1: some missing, 2: a bad one
  mkdir -p "$W"
  local p name bad missing="" have=0
  for p in "$repo"/.gpu/p[0-9][0-9]; do
    [ -f "$p" ] || continue
    cp -f "$p" "$W/" && echo "staged $(basename "$p") ($(stat -c %s "$p") B)"
  done
  [ -f "$repo/.gpu/sums" ] && cp -f "$repo/.gpu/sums" "$W/sums"
  [ -f "$W/sums" ] || { echo "no .gpu/sums carried: cannot tell which pieces are missing"; return 1; }
  while read -r _ name; do
    [ "$name" = sites.tar.zst ] && continue
    if [ -f "$W/$name" ]; then have=$((have + 1)); else missing="$missing $name"; fi
  done < "$W/sums"
  if [ "$have" -gt 0 ]; then
    bad=$(cd "$W" && grep -v ' sites.tar.zst$' sums | sha256sum -c --quiet --ignore-missing 2>&1) \
      || { echo "BAD PIECE: $bad"; return 2; }
  fi
  if [ -n "$missing" ]; then echo "$have pieces in $W; missing:$missing"; return 1; fi
  echo "all $have pieces in $W, checksums ok"
}

build_model() {  # idempotent; a second caller waits for the first one's build (flock)
  local tag="$1" dir
  dir="$(model_dir "$tag")"
  mkdir -p "$MODELS"
  (
    flock 9
    [ -f "$dir/sgtui-tinymodel.json" ] && { stamp "model $tag: $dir ready"; exit 0; }
    stamp "model $tag: building $dir"
    # shellcheck disable=SC2046  # model_args is a list of flags
    PYTHONPATH="$SRC" python3 "$SRC/benchmarks/gpu/tinymodel_gpu.py" --out "$dir" $(model_args "$tag") 2>&1 | tail -3
    [ -f "$dir/sgtui-tinymodel.json" ] || { stamp "MODEL $tag FAILED"; exit 1; }
    stamp "model $tag: built, $(du -sh "$dir" | cut -f1)"
  ) 9>"$MODELS/$tag.lock"
}

wait_model_builds() {  # nothing else may use the GPU (or the disk) while a run is measured
  local l
  for l in "$MODELS"/*.lock; do [ -e "$l" ] && flock "$l" true; done
  return 0
}

install_tools() {
  [ -f "$TOOLS/.done" ] && return 0
  [ -d "$repo/.gpu/w" ] || { echo "no .gpu/w carried: carry it in this call"; return 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$TOOLS" \
    "$repo"/.gpu/w/*.whl || return 1
  if ! PYTHONPATH="$TOOLS" python3 -c "import typer, rich, pynvml" 2>/dev/null; then
    echo "typer, rich or nvidia-ml-py missing on this host: installing .gpu/w/opt"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$TOOLS" "$repo"/.gpu/w/opt/*.whl || return 1
  fi
  touch "$TOOLS/.done"
}

unpack() {  # the window is read from the frame; 2**31 admits any --long up to 31
  [ -f "$SITES/.unpacked" ] && { stamp "sites already unpacked"; return 0; }
  rm -rf "$SITES" && mkdir -p "$SITES" || return 1
  local names
  names=$(grep -v ' sites.tar.zst$' "$W/sums" | awk -v w="$W" '{print w "/" $2}')
  if command -v zstd >/dev/null && [ "${RLW_NO_ZSTD:-0}" != 1 ]; then
    # shellcheck disable=SC2086  # piece paths have no spaces
    cat $names | zstd -d --long=31 -q | tar xf - -C "$SITES" || return 1
  else
    echo "no zstd binary: python zstandard"
    # shellcheck disable=SC2086
    cat $names | PYTHONPATH="$TOOLS" python3 -c "
import sys, tarfile, zstandard
r = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(sys.stdin.buffer, read_size=1 << 20)
with tarfile.open(fileobj=r, mode='r|') as t:
    t.extractall(sys.argv[1], **({'filter': 'fully_trusted'} if hasattr(tarfile, 'fully_trusted_filter') else {}))
" "$SITES" || return 1
  fi
  local s
  for s in vllm sglang; do [ -d "$SITES/$s-site/$s" ] || { echo "no $s in $SITES/$s-site"; return 1; }; done
  touch "$SITES/.unpacked"
}

write_wrappers() {
  # A site on PYTHONPATH has its .pth files ignored. The one that matters: vllm-site's
  # nvidia_cutlass_dsl_packages.pth puts the CuTe DSL (`cutlass`) on sys.path; without it vLLM logs
  # "cuteDSL ... not available" and skips its Hopper warmup of ll_bf16 router GEMMs, as in the earlier
  # H100/H200 sessions. RLW_VLLM_CUTE=1 adds that path, as a pip-installed venv would have it.
  local s extra
  for s in vllm sglang; do
    extra=""
    [ "$s" = vllm ] && [ "${RLW_VLLM_CUTE:-0}" = 1 ] && extra=":$SITES/vllm-site/nvidia_cutlass_dsl/dsl_packages"
    cat > "$BIN/$s-python" <<EOW
#!/usr/bin/env bash
# python3 with $s's pre-installed site after whatever PYTHONPATH the caller set (sgtui, /tmp/tools), and
# $TOOLS (megatron-core, orjson) after it again, should a caller pass a PYTHONPATH without it
export PYTHONPATH="\${PYTHONPATH:+\$PYTHONPATH:}$SITES/$s-site$extra:$TOOLS"
export PATH="\$PATH:$SITES/$s-site/bin"
exec python3 "\$@"
EOW
    chmod +x "$BIN/$s-python"
  done
}

import_check() {  # also fills the sites' __pycache__ (installed with --no-compile) before the runs
  local s="$1" code out t=$SECONDS
  case "$s" in
    vllm) code="import vllm, vllm.entrypoints.openai.api_server, megatron.core; print('vllm', vllm.__version__)" ;;
    sglang) code="import sglang, sgl_kernel, torch_memory_saver, flashinfer, sglang.launch_server, megatron.core
print('sglang', sglang.__version__, 'sgl_kernel', sgl_kernel.__version__, 'flashinfer', flashinfer.__version__)" ;;
  esac
  if out=$(cd /tmp && timeout 300 "$BIN/$s-python" -c "$code" 2>&1); then
    stamp "import $s ok in $(( SECONDS - t )) s: $(echo "$out" | tail -1)"
  else
    stamp "IMPORT $s FAILED after $(( SECONDS - t )) s:"; echo "$out" | tail -25
  fi
}

worker() {  # the background job
  local tags="$1" tag dir limit rc
  stamp "worker $$ for:$tags"
  nvidia-smi --query-gpu=index,name,memory.used,memory.total,driver_version --format=csv,noheader
  export PYTHONPATH="$SRC:$TOOLS" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
  import_check vllm &
  import_check sglang &
  for tag in $tags; do build_model "$tag"; done
  wait
  wait_model_builds
  for tag in $tags; do
    dir="$(model_dir "$tag")"
    if [ "$tag" = a ]; then limit="${LIMIT_A:-900}"; else limit="${LIMIT_B:-1500}"; fi
    mkdir -p "$RL/s-$tag"
    if [ ! -f "$dir/sgtui-tinymodel.json" ]; then
      stamp "run $tag skipped: no model in $dir"; echo 99 > "/tmp/rl_loop.$tag.rc"; continue
    fi
    stamp "run $tag: sgtui on $dir (limit $limit s)"
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader
    # shellcheck disable=SC2086  # RLW_RUNS is a list of --run flags
    (cd /tmp && timeout -k 120 "$limit" python3 -m sgtui.cli --no-ui --mode training \
      ${RLW_RUNS:---run vllm:sleep1 --run sglang:release} --model "$dir" \
      --vllm-python "$BIN/vllm-python" --sglang-python "$BIN/sglang-python" \
      --num-steps 4 --num-rollouts 64 --concurrency 64 --max-input-tokens 256 --max-output-tokens 512 \
      --gpu-memory-utilization 0.5 --export txt,json,md -o "$RL/s-$tag")
    rc=$?
    stamp "run $tag: sgtui exited $rc$([ "$rc" = 124 ] && echo ' (time limit)')"
    if [ "$rc" != 0 ]; then  # engines a killed sgtui left behind (found by sgtui's own markers only)
      (cd /tmp && timeout 120 python3 -m sgtui.cli cleanup --yes)
    fi
    echo "$rc" > "/tmp/rl_loop.$tag.rc"
    ls -la "$RL/s-$tag"
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader
  done
  stamp "worker done"
  touch /tmp/rl_loop.done
}

verb="${1:-a}"
case "$verb" in
  --worker)
    worker "$2"
    ;;
  --build)
    build_model "$2"
    ;;
  stage)
    stamp "stage"
    stage
    [ $? = 2 ] && exit 2
    if [ -n "${2:-}" ]; then
      tags="$(tags_of "$2")" || { echo "stage: expected a, b or ab, got $2"; exit 2; }
      [ -d "$SRC" ] || copy_src || exit 1
      mkdir -p "$MODELS"
      for tag in $tags; do
        [ -e "$MODELS/$tag.started" ] && continue
        touch "$MODELS/$tag.started"
        setsid nohup bash "$SRC/benchmarks/gpu/record_rl_loop.sh" --build "$tag" >> "$MODELS/build.log" 2>&1 < /dev/null &
        echo "model $tag: building in the background ($MODELS/build.log)"
      done
    fi
    [ -f "$MODELS/build.log" ] && tail -3 "$MODELS/build.log"
    exit 0
    ;;
  *)
    tags="$(tags_of "$verb")" || { echo "usage: record_rl_loop.sh stage [a|b|ab] | record_rl_loop.sh a|b|ab [WAIT_S]"; exit 2; }
    wait_s="${2:-480}"
    stamp "start:$tags"
    if [ -f /tmp/rl_loop.started ] && [ ! -f /tmp/rl_loop.done ]; then
      echo "a recording is still running (/tmp/rl_loop.started, no /tmp/rl_loop.done): poll it"; tail -5 "$LOG"; exit 4
    fi
    stage || { echo "pieces missing or bad: nothing started"; exit 3; }
    stamp "tools"; install_tools || exit 1
    stamp "unpack"; unpack || { echo "unpack failed"; exit 1; }
    du -sh "$SITES"/*-site
    write_wrappers
    copy_src || exit 1
    [ "${RLW_DRY:-0}" = 1 ] && { stamp "dry run: stopping before the worker"; exit 0; }
    rm -f /tmp/rl_loop.done
    for tag in $tags; do rm -f "/tmp/rl_loop.$tag.rc"; done
    mkdir -p "$RL"
    touch "$LOG"
    from=$(( $(stat -c %s "$LOG") + 1 ))
    date +%s > /tmp/rl_loop.started
    stamp "starting the worker (log $LOG)"
    setsid nohup bash "$SRC/benchmarks/gpu/record_rl_loop.sh" --worker "$tags" >> "$LOG" 2>&1 < /dev/null &
    tail -c "+$from" -f "$LOG" &
    tailer=$!
    end=$(( SECONDS + wait_s ))
    while [ "$SECONDS" -lt "$end" ] && [ ! -f /tmp/rl_loop.done ]; do sleep 5; done
    kill "$tailer" 2>/dev/null
    echo
    TAIL_LINES=0 bash "$here/poll_rl_loop.sh" 0
    [ -f /tmp/rl_loop.done ] || echo "still running: next call bash benchmarks/gpu/poll_rl_loop.sh 540"
    ;;
esac
