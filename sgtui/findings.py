"""Named findings about each run: what a skeptic checks before trusting a comparison of engines.

`findings(summaries) -> tuple[Finding, ...]` is pure and reads only `RunSummary` (the memory ledger of
`state.memory_summary`, the KV-cache capacity readings, the per-request TPOT of each step), so a replayed
session gives the findings the live run gave, and a better rule re-scores old sessions. The verdict prints
them; each names its numbers in one line. A finding never fires on what was not measured (CPU memory, a
session without per-process NVML, an engine that does not report its capacity).

Findings and why each threshold is where it is:
- `offload_freed_little`: an offload gave back under 90 % of the engine's own memory (NVML per process,
  the ledger's one definition of held). Every sleep/release offload in the shipped GPU sessions gave
  back 96.0-98.9 % (the engine keeps its CUDA context: 784-2,780 MiB), a restart 100 %; a `keep`
  strategy offloads nothing by design and is judged by neither memory rule. Severity `warning`, or `info`
  when what stays is under 1 GiB (a 1-GPU engine's CUDA context kept 784-980 MiB there: a small engine,
  not one that kept its KV cache).
- `held_growing`: the engine's memory still held after offload rose at every step, by more than
  `HELD_NOISE_MIB` each, over at least `GROWTH_STEPS` consecutive steps and by at least `GROWTH_MIB` in all.
  Across the 12 offloading runs of those sessions it moved by at most 20 MiB from one step to the next
  (SGLang release, 2026-11-23: 950, 970, 950 MiB; every other run by 0-2 MiB), so two upward wobbles in
  a row stay under 64 MiB; a rise at every step is a leak, a one-off jump that then stays is not.
- `kv_capacity_shrank`: the KV-cache capacity read after a wake-up (or a restart) is below the one read
  at start: vLLM's num_gpu_blocks x block_size, SGLang's max_total_num_tokens. Both are whole numbers the
  server computed, so any decrease is real; it is the effect RL reports blame on vLLM sleep/wake (issue 13
  cites vLLM RFC 15254): fewer sequences fit after the first step than at start.
- `decode_slower_after_sync`: requests decoded slower after the first weight sync than before it: a Welch
  t-interval (`stats.welch`) of per-request TPOT before vs after excludes zero, the slowdown is at least
  `MIN_SLOWDOWN`, and most steps after the sync are that much slower on their own (one slow step on a
  shared box is drift, not the sync). What vLLM's `load_inplace` did: the adapter re-read from disk at
  every activation, 2.7x the ITL on the H100 session of 2026-11-23. 10 % is five times the 2 % spread of
  back-to-back rollouts on an idle box (sgtui.verdict's resolution). Step 1 is usually the slower one (its
  one-off costs), so the rule looks only for the opposite. Severity `info` where the steps before the sync
  served the base model and later ones an adapter (restart runs of sessions before 2026-11-28): a
  difference of what was served, said as such, not a fault of the sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sgtui import fmt, stats
from sgtui.state import RunSummary

FREED_SHARE_MIN = 0.90  # the bar: an offload should give the trainer at least this much back
SMALL_HELD_MIB = 1024.0  # held below this after offload is about a CUDA context (severity info)
HELD_NOISE_MIB = 20.0  # the largest step-to-step movement of held memory seen; a rise must exceed it every step
GROWTH_STEPS = 3  # consecutive steps that must rise
GROWTH_MIB = 64.0  # total rise over them: more than two of the largest wobbles seen, back to back
MIN_SLOWDOWN = 0.10  # relative TPOT slowdown after the first sync that counts
#: strategies that keep the engine resident on purpose: nothing to free
RESIDENT_STRATEGIES = ("keep",)
SEVERITIES = ("info", "warning")


@dataclass(frozen=True)
class Finding:
    run: str  # the run's label
    key: str  # offload_freed_little | held_growing | kv_capacity_shrank | decode_slower_after_sync
    text: str  # one line, naming the numbers
    severity: str = "warning"  # info | warning
    steps: tuple[int, ...] = ()  # the steps it is about


def findings(summaries: Sequence[RunSummary]) -> tuple[Finding, ...]:
    """Every finding of every run, in run order, then in the order of the module docstring."""
    out: list[Finding] = []
    for s in summaries:
        for rule in (offload_freed_little, held_growing, kv_capacity_shrank, decode_slower_after_sync):
            f = rule(s)
            if f is not None:
                out.append(f)
    return tuple(out)


def finding_line(f: Finding) -> str:
    """How every report and the UI print a finding: "finding (warning) vllm-sleep1: ..."."""
    return f"finding ({f.severity}) {f.run}: {f.text}"


def _steps(ns: Sequence[int]) -> str:
    """"step 3", "steps 2-4" (consecutive), "steps 1,3"."""
    if len(ns) == 1:
        return f"step {ns[0]}"
    if ns[-1] - ns[0] == len(ns) - 1:
        return f"steps {ns[0]}-{ns[-1]}"
    return "steps " + ",".join(map(str, ns))


def offload_freed_little(s: RunSummary) -> Finding | None:
    mem = s.memory
    if not mem.measured or mem.source != "engine processes" or s.strategy in RESIDENT_STRATEGIES:
        return None
    low = [m for m in mem.steps if m.freed_share is not None and m.freed_share < FREED_SHARE_MIN]
    if not low:
        return None
    judged = sum(1 for m in mem.steps if m.freed_share is not None)
    worst = min(low, key=lambda m: m.freed_share)  # type: ignore[arg-type, return-value]
    held = worst.held_mib or 0.0
    text = (f"offload freed {worst.freed_share:.0%} of the engine's {fmt.mib(worst.engine_before_mib)} "
            f"(engine processes, NVML) at step {worst.step}, {fmt.mib(held)} still held; "
            f"under {FREED_SHARE_MIN:.0%} in {len(low)} of {judged} offloads")
    return Finding(s.label, "offload_freed_little", text, "info" if held < SMALL_HELD_MIB else "warning",
                   tuple(m.step for m in low))


def held_growing(s: RunSummary) -> Finding | None:
    mem = s.memory
    if not mem.measured or mem.source != "engine processes" or s.strategy in RESIDENT_STRATEGIES:
        return None
    pts = [(m.step, m.held_mib) for m in mem.steps if m.held_mib is not None]
    best: list[tuple[int, float]] = []
    cur: list[tuple[int, float]] = []
    for step, held in pts:
        if cur and step == cur[-1][0] + 1 and held - cur[-1][1] > HELD_NOISE_MIB:
            cur.append((step, held))
        else:
            cur = [(step, held)]
        if len(cur) >= GROWTH_STEPS and cur[-1][1] - cur[0][1] > (best[-1][1] - best[0][1] if best else 0.0):
            best = list(cur)
    if not best or best[-1][1] - best[0][1] < GROWTH_MIB:
        return None
    ns = [n for n, _ in best]
    rise = best[-1][1] - best[0][1]
    text = (f"engine memory held after offload grew at every step, {fmt.mib(best[0][1])} -> "
            f"{fmt.mib(best[-1][1])} over {_steps(ns)} (+{fmt.mib(rise)}, +{fmt.mib(rise / (len(ns) - 1))}/step)")
    return Finding(s.label, "held_growing", text, "warning", tuple(ns))


def kv_capacity_shrank(s: RunSummary) -> Finding | None:
    caps = s.kv_capacity_steps
    if len(caps) < 2:
        return None
    first_step, first = caps[0]
    smaller = [(n, v) for n, v in caps[1:] if v < first]
    if not smaller or first <= 0:
        return None
    n, v = min(smaller, key=lambda x: x[1])
    text = (f"KV-cache capacity after wake-up {v:,.0f} tokens at step {n}, {first:,.0f} at start "
            f"(step {first_step}): {100.0 * (v - first) / first:+.0f} %, fewer sequences fit than at start; "
            f"smaller in {len(smaller)} of {len(caps) - 1} later readings")
    return Finding(s.label, "kv_capacity_shrank", text, "warning", tuple(x for x, _ in smaller))


def decode_slower_after_sync(s: RunSummary) -> Finding | None:
    k = s.first_sync_step
    if k is None:
        return None
    before = [x for n, xs in s.step_tpot_ms if n <= k for x in xs]
    after_steps = [(n, xs) for n, xs in s.step_tpot_ms if n > k]
    after = [x for _, xs in after_steps for x in xs]
    c = stats.welch(before, after)
    if not c.significant or c.diff <= 0 or c.mean_a <= 0 or c.diff / c.mean_a < MIN_SLOWDOWN:
        return None
    bar = c.mean_a * (1.0 + MIN_SLOWDOWN)
    slow = [n for n, xs in after_steps if stats.mean(xs) >= bar]
    if 2 * len(slow) <= len(after_steps):
        return None
    span_before = _steps([n for n, _ in s.step_tpot_ms if n <= k])
    span_after = _steps([n for n, _ in after_steps])
    text = (f"decode slower after the first weight sync (end of step {k}): mean TPOT {fmt.ms(c.mean_a)} in "
            f"{span_before}, {fmt.ms(c.mean_b)} in {span_after} ({fmt.pct(c.pct(c.diff), 0)}, 95 % interval "
            f"{fmt.pct(c.pct(c.ci_low), 0)} to {fmt.pct(c.pct(c.ci_high), 0)}; {len(slow)} of {len(after_steps)} "
            f"later steps each {MIN_SLOWDOWN:.0%}+ slower)")
    if s.inplace_lora_sync:
        text += "; adapters were loaded in place (load_inplace: vLLM re-reads them from disk)"
    before_steps = [n for n, _ in s.step_tpot_ms if n <= k]
    base_first = all(n in s.base_model_steps for n in before_steps)
    if base_first and any(n not in s.base_model_steps for n, _ in after_steps):
        text += f"; {span_before} served the base model, later steps an adapter (LoRA decode costs more)"
    return Finding(s.label, "decode_slower_after_sync", text, "info" if base_first else "warning", tuple(slow))
