#!/usr/bin/env bash
# A check as a person would do it: `sgtui replay` of two generated sessions side by side inside a real tmux
# pane (80x24, then resized to 200x50 and 60x18), keys sent, the pane captured to text and asserted on:
# help, play, seek to step 2 of each run (columns picked with the arrows), the verdict, quit.
#
#   bash tests/tui/tmux_replay_check.sh            # needs tmux (apt-get install tmux)
#
# The caller's COLUMNS/LINES reach sgtui (a shell may export them): the UI must follow resizes anyway.
# tests/tui/test_tui_tmux.py runs it when tmux is installed, with stale ones. Leaves its captures in $OUT
# (default: a temp dir) and removes its tmux session at the end.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
OUT="${OUT:-$(mktemp -d)}"
NAME="sgtui-check-$$"
command -v tmux >/dev/null || { echo "tmux_replay_check: tmux not installed (apt-get install tmux)"; exit 2; }

cleanup() { tmux kill-session -t "$NAME" 2>/dev/null || true; }
trap cleanup EXIT

A="$OUT/check-a.jsonl"
B="$OUT/check-b.jsonl"
REPO="$REPO" "$PY" - "$A" "$B" <<'PYEOF'
import sys
import os; sys.path.insert(0, os.path.join(os.environ["REPO"], "tests/tui"))
from gen_session import generate, write_session
write_session(sys.argv[1], generate(seed=42))
write_session(sys.argv[2], generate(seed=43))
PYEOF

fail() { echo "FAIL: $*"; echo "--- last capture ($1) ---"; cat "$OUT/last.txt" 2>/dev/null; exit 1; }
capture() { tmux capture-pane -p -t "$NAME" > "$OUT/$1.txt"; cp "$OUT/$1.txt" "$OUT/last.txt"; }
# wait_for NAME TEXT [SECONDS]: capture until TEXT shows (a fixed grep string)
wait_for() {
  local n="$1" text="$2" secs="${3:-20}" i
  for ((i = 0; i < secs * 10; i++)); do
    capture "$n"
    grep -qF -- "$text" "$OUT/$n.txt" && return 0
    sleep 0.1
  done
  fail "$n: '$text' not on screen after ${secs}s"
}
wait_for_re() {                             # like wait_for, with an extended regex
  local n="$1" re="$2" secs="${3:-20}" i
  for ((i = 0; i < secs * 10; i++)); do
    capture "$n"
    grep -qE -- "$re" "$OUT/$n.txt" && return 0
    sleep 0.1
  done
  fail "$n: /$re/ not on screen after ${secs}s"
}
tmux new-session -d -s "$NAME" -x 80 -y 24 -e "REPO=$REPO" \
  "cd '$OUT' && TERM=tmux-256color ${COLUMNS:+COLUMNS=$COLUMNS} ${LINES:+LINES=$LINES} '$PY' -m sgtui replay \
   check-a.jsonl check-b.jsonl; echo SGTUI-EXIT=\$?; sleep 30"

wait_for open "paused · 1x · 0:00"          # opens at the first event, paused, at 1x
tmux send-keys -t "$NAME" "?"               # the help lists the keys
wait_for help "Play/pause"
tmux send-keys -t "$NAME" Escape
sleep 0.3                                   # a key right after Escape would read as alt+key
tmux send-keys -t "$NAME" "s" "s" Space     # 1x -> 10x -> max, play
wait_for end "end · max"                    # played to the end at max speed
wait_for_re end "tok/s mean +[0-9]"         # percentiles come in the background once the stream is quiet
# the runs are named as the report names them, whole, with a legend of the session tags
grep -qE "metric +vllm-sleep1#1 +sg-release#1 +vllm-sleep1#2 +sg-release#2" "$OUT/end.txt" \
  || fail end "run columns are not vllm-sleep1#1 sg-release#1 vllm-sleep1#2 sg-release#2"
grep -qF "sessions:  #1 check-a.jsonl  #2 check-b.jsonl" "$OUT/end.txt" || fail end "no session legend"
grep -qE "tok/s mean +[0-9]" "$OUT/end.txt" || fail end "no throughput number"
grep -qF "step 3 of 1-3" "$OUT/end.txt" || fail end "replay bar does not say step 3 of 1-3"
(cd "$OUT" && "$PY" - <<'PYEOF') || fail end "the report names runs differently from the columns"
from sgtui.export import combined, load_sessions
labels = [label for label, *_ in combined(load_sessions(["check-a.jsonl", "check-b.jsonl"])).runs]
assert labels == ["vllm-sleep1#1", "sglang-release#1", "vllm-sleep1#2", "sglang-release#2"], labels
PYEOF

tmux send-keys -t "$NAME" "{"               # back to the start, paused
wait_for start "step 0 of 1-3"
# step 2 of each run: from the end (where every run has its column) pick the run's column with the arrows
# (the status line names the picked one), then `g 2`
pick() {
  local run="$1" i
  for ((i = 0; i < 5; i++)); do
    tmux send-keys -t "$NAME" Right; sleep 0.3
    capture "pick-$run"
    grep -qF "◆ $run " "$OUT/pick-$run.txt" && return 0
  done
  fail "pick-$run" "column $run not picked with the arrows"
}
for run in vllm-sleep1#1 sglang-release#1 vllm-sleep1#2 sglang-release#2; do
  tmux send-keys -t "$NAME" "}"
  wait_for "end-$run" "end · "
  pick "$run"
  tmux send-keys -t "$NAME" "g"; sleep 0.3
  tmux send-keys -t "$NAME" "2" Enter
  wait_for "step2-$run" "step 2 of 1-3 · $run"
  grep -qF "paused" "$OUT/step2-$run.txt" || fail "step2-$run" "seek did not stay paused"
done
tmux send-keys -t "$NAME" "v"               # the verdict
wait_for verdict "sgtui · verdict"
grep -qE "WINNER|no clear winner|no verdict" "$OUT/verdict.txt" || fail verdict "no verdict headline"
tmux send-keys -t "$NAME" Escape
wait_for back "tok/s mean"

tmux resize-window -t "$NAME" -x 200 -y 50  # a big screen: table and timeline side by side
wait_for wide "phases:"
grep -qE "tok/s mean.*phases:|phases:.*" "$OUT/wide.txt" || fail wide "no timeline legend"
grep -qF "▲ phase starts:" "$OUT/wide.txt" || fail wide "no legend under the GPU markers"
[ "$(wc -l < "$OUT/wide.txt")" -ge 49 ] || fail wide "pane not resized"
tmux send-keys -t "$NAME" "}"               # to the end
wait_for wide_end "end · max"
grep -qF "▼ log · vllm-sleep1#1" "$OUT/wide_end.txt" || fail wide_end "logs not open on a big screen"

tmux resize-window -t "$NAME" -x 60 -y 18   # very narrow: still one status line, still the table
sleep 0.5
wait_for narrow "tok/s mean"                # the table is still there, narrower (it shows at 200 wide too)
[ "$(wc -l < "$OUT/narrow.txt")" -le 18 ] || fail narrow "pane not resized"
[ "$(wc -L < "$OUT/narrow.txt")" -le 60 ] || fail narrow "lines wider than 60"
grep -qE "^ sgtui .*replay" "$OUT/narrow.txt" || fail narrow "status line lost"
grep -qF "step 3 of 1-3" "$OUT/narrow.txt" || fail narrow "replay bar lost"
tmux send-keys -t "$NAME" "g"; sleep 0.3    # no such step: refused (last: its toast covers the bar)
tmux send-keys -t "$NAME" "5" Enter
wait_for refused "no step 5"

tmux send-keys -t "$NAME" "q"
wait_for exit "SGTUI-EXIT=0" 10
echo "tmux_replay_check: ok (captures in $OUT)"
