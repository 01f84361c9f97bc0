"""Where an RL step's time goes, from a recorded session: the engines' share and the train phase's split.

    python benchmarks/rl_step_split.py sessions/20261203T221836Z-*-training-h200-1b.jsonl [more.jsonl]

Per run and per step: rollout, offload, train (and its parts: onload, update, export, offload; a per-step
launch where the trainer had one), reload, weight sync, the train/rollout logprob mismatch, and GPU memory
freed at offload, held after it by the engine, and held by the offloaded trainer during the rollout. Then
the two ratios the RL-loop issue asks for, measured in one session side by side:

- the engines' share of a step: (rollout + offload + reload + weight sync) / step time. With the trainer
  launched per step on an H200 (sessions of 2026-11-28 and FACTS.md) it was 3-4 %; the engines cannot win
  or lose a comparison in which they are 3 % of the time.
- train / update: the train phase over its `update` part (the optimizer work itself). Target: within 3x;
  the per-step torchrun launch made it ~20x.

Only completed steps count; step 1 is printed but kept out of the means (first-batch compilation, CUDA
set-up). Reads the session with sgtui's own reader and fold, so the numbers are the reports' numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sgtui import stats  # noqa: E402
from sgtui.session import read_session  # noqa: E402
from sgtui.state import load_state, run_summary  # noqa: E402

ENGINE_PHASES = ("rollout", "offload", "reload", "weight_sync")


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def fmt_gib(mib: float | None) -> str:
    return "—" if mib is None else f"{mib / 1024:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sessions", nargs="+", type=Path)
    args = p.parse_args()
    ok = True
    for path in args.sessions:
        st = load_state(read_session(path).events, str(path))
        print(f"== {path.name}")
        for label, run in st.runs.items():
            s = run_summary(run, st.gpu)
            info = run.info
            print(f"-- {label}: {info.engine_version if info else ''} on {info.device if info else '?'}; "
                  f"trainer launch (once) {fmt_s(s.trainer_start_s)} s")
            print("step  rollout offload   train [onload update export offload] reload  sync  share  "
                  "|d|     k3      freed held trainer(GiB)")
            mem = {m.step: m for m in s.memory.steps}
            shares, ratios = [], []
            for step in s.steps:
                if not step.complete or step.total_s is None:
                    continue
                ph, parts = step.phases, step.train_parts
                engine = sum(ph.get(k, 0.0) for k in ENGINE_PHASES)
                share = engine / step.total_s
                update = parts.get("update")
                m = mem.get(step.step)
                mm = step.mismatch
                d = f"{mm['mean_abs']:.3f}" if mm else "—"
                k3 = f"{mm['k3']:.1e}" if mm else "—"
                print(f"{step.step:>4} {fmt_s(ph.get('rollout')):>8} {fmt_s(ph.get('offload')):>7} "
                      f"{fmt_s(step.train_s):>7} [{fmt_s(parts.get('onload')):>5} {fmt_s(update):>6} "
                      f"{fmt_s(parts.get('export')):>6} {fmt_s(parts.get('offload')):>6}]"
                      f"{'+launch ' + fmt_s(parts['launch']) if 'launch' in parts else ''} "
                      f"{fmt_s(ph.get('reload')):>6} {fmt_s(ph.get('weight_sync')):>5} {share:6.1%} "
                      f"{d:>7} {k3:>7} "
                      f"{fmt_gib(m.freed_mib if m else None):>6} {fmt_gib(m.held_mib if m else None):>4} "
                      f"{fmt_gib(m.trainer_rollout_mib if m else None):>5}/{fmt_gib(m.trainer_train_mib if m else None)}")
                if step.step > 1:
                    shares.append(share)
                    if update and step.train_s:
                        ratios.append(step.train_s / update)
            if shares:
                ratio = stats.mean(ratios) if ratios else None
                print(f"steps 2+: engines' share of the step {stats.mean(shares):.1%}; train / update "
                      + (f"{ratio:.2f}x (target <= 3x)" if ratio else "n/a"))
                ok &= ratio is None or ratio <= 3.0
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
