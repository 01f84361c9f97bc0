"""Compare runs metric by metric with noise bands, and name a winner only when the data supports it.

The noise is the per-step variation of each run: every metric is compared
with a Welch t-interval of the difference of per-step means. A difference
whose 95% interval contains zero is reported as "within noise", never as a
win. The overall verdict is the lowest mean total step time (what an RL
user pays for), explained by the per-phase differences that make it up.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgtui import stats
from sgtui.state import RunSummary

#: (key in RunSummary.phase_samples, label, higher is better, unit)
METRICS: tuple[tuple[str, str, bool, str], ...] = (
    ("step_total", "Total step time", False, "s"),
    ("rollout", "Rollout", False, "s"),
    ("offload", "Offload", False, "s"),
    ("train", "Train", False, "s"),
    ("reload", "Reload", False, "s"),
    ("weight_sync", "Weight sync", False, "s"),
    ("transition", "Transition overhead", False, "s"),
    ("output_throughput", "Output throughput", True, "tok/s"),
    ("mean_ttft_ms", "Mean TTFT", False, "ms"),
    ("mean_itl_ms", "Mean ITL", False, "ms"),
    ("mean_tpot_ms", "Mean TPOT", False, "ms"),
    ("p99_e2el_ms", "P99 E2E latency", False, "ms"),
)
BREAKDOWN_PHASES = ("rollout", "offload", "train", "reload", "weight_sync", "restart")


@dataclass(frozen=True)
class MetricRow:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    means: dict[str, float | None]  # run label -> mean (None: no data)
    best: str | None  # run with the best mean
    diffs_pct: dict[str, float]  # other run -> % worse than best (positive = worse)
    bands_pct: dict[str, tuple[float, float]]  # other run -> 95% interval of that % difference
    significant: dict[str, bool]  # other run -> difference outside the noise
    winner: str | None  # best run, when it beats every other run outside the noise
    note: str  # "within noise", "1 step: no noise estimate", ...
    noise_known_all: bool = True  # every comparison had at least 2 samples a side


@dataclass(frozen=True)
class Verdict:
    ranked: tuple[str, ...]  # runs with complete steps, fastest mean step first
    unranked: dict[str, str]  # run -> why it is not ranked (failed, no complete step)
    winner: str | None
    headline: str  # one line: WINNER ... or "no clear winner: ..."
    confidence: str
    rows: tuple[MetricRow, ...]
    breakdown: tuple[tuple[str, float], ...]  # (phase, seconds per step the runner-up loses there)
    runner_up: str | None
    caveats: tuple[str, ...] = ()  # what the numbers above do not say by themselves


#: Engines whose CPU use while the trainer ran differs by this many cores get a caveat on the train phase.
ENGINE_CPU_CAVEAT_CORES = 0.5


def train_caveat(a: RunSummary, b: RunSummary, train_diff: float) -> str:
    """Training is the control variable (both runs run the same trainer), so a train-time difference needs
    explaining: an engine that keeps a CPU core busy while it is offloaded (SGLang's scheduler polls) takes
    that core from a trainer sharing the machine's CPUs. Empty when the engines' CPU use was alike."""
    ca, cb = a.engine_cpu_in_train, b.engine_cpu_in_train
    if ca is None or cb is None or abs(cb - ca) < ENGINE_CPU_CAVEAT_CORES or abs(train_diff) < 1e-3:
        return ""
    busy, other = (b, a) if cb > ca else (a, b)
    return (f"train differs by {train_diff:+.2f}s/step with the same trainer: {busy.label}'s engine used "
            f"{max(ca, cb):.2f} CPU cores meanwhile ({other.label}'s {min(ca, cb):.2f}); where the trainer "
            "shares CPU cores with the engine, that is the engine's cost")


def inplace_caveat(runs: list[RunSummary]) -> str:
    """Sessions recorded before sgtui stopped using vLLM's `load_inplace` measured a vLLM bug along with
    the engine: say which runs, since nothing else in the numbers shows it."""
    hit = [r.label for r in runs if r.inplace_lora_sync]
    if not hit:
        return ""
    return (f"{', '.join(hit)} hot-loaded adapters with vLLM's load_inplace (sgtui before 2026-11-29): vLLM then "
            "re-reads the adapter from disk whenever it activates it, so rollouts after the first sync decode "
            "slower than the engine does (2.7x the ITL on an H100); record again to compare")


#: A run's logprob mismatch is called out when its mean |delta| is this many times another run's and above
#: MISMATCH_FLOOR (fp32 on CPU measures ~1e-6 either way; bf16 on a GPU ~1e-2 from kernel differences alone).
MISMATCH_RATIO = 3.0
MISMATCH_FLOOR = 1e-3


def mismatch_caveat(runs: list[RunSummary]) -> str:
    """An engine whose rollouts disagree with the trainer biases the policy gradient (or its weight sync did
    not take effect): a speed win means little then. Compares each run's mean |delta logprob| to the lowest."""
    have = [(r.mismatch["mean_abs"], r.label) for r in runs if r.mismatch]
    if len(have) < 2:
        return ""
    low, low_label = min(have)
    high = [(m, lbl) for m, lbl in have if m > MISMATCH_FLOOR and m > MISMATCH_RATIO * max(low, 1e-12)]
    if not high:
        return ""
    return ("logprob mismatch: " + ", ".join(f"{lbl} mean |d| {m:.2g}" for m, lbl in sorted(high, reverse=True))
            + f" against {low:.2g} for {low_label}: its rollouts disagree with the trainer's logprobs of the same "
            "tokens (numerics, or a weight sync that did not take effect), which biases the policy gradient")


def _compare_row(key: str, label: str, hib: bool, unit: str, runs: list[RunSummary]) -> MetricRow:
    samples = {r.label: list(r.phase_samples.get(key, ())) for r in runs}
    means = {k: (stats.mean(v) if v else None) for k, v in samples.items()}
    have = [k for k, v in means.items() if v is not None]
    if not have:
        return MetricRow(key, label, unit, hib, means, None, {}, {}, {}, None, "no data")
    best = (max if hib else min)(have, key=lambda k: means[k])  # type: ignore[arg-type, return-value]
    diffs, bands, sig = {}, {}, {}
    noise_known = True
    for other in have:
        if other == best:
            continue
        c = stats.welch(samples[best], samples[other])
        sign = -1.0 if hib else 1.0  # positive % = other is worse
        lo, hi = sorted((sign * c.pct(c.ci_low), sign * c.pct(c.ci_high)))
        diffs[other] = sign * c.pct(c.diff)
        bands[other] = (lo, hi)
        sig[other] = c.significant
        noise_known &= c.noise_known
    winner = best if len(have) > 1 and sig and all(sig.values()) else None
    if len(have) < 2:
        note = "only one run has data"
    elif not noise_known:
        note = "1 step: no noise estimate"
    elif winner:
        note = f"{best} better outside noise"
    elif any(sig.values()):
        note = f"{best} best; some differences within noise"
    else:
        note = "within noise"
    return MetricRow(key, label, unit, hib, means, best, diffs, bands, sig, winner, note, noise_known)


def verdict(summaries: list[RunSummary]) -> Verdict:
    unranked: dict[str, str] = {}
    usable = []
    for s in summaries:
        if s.status == "failed":
            unranked[s.label] = "failed" + (f" ({s.errors[-1].category})" if s.errors else "")
        elif not s.phase_samples.get("step_total"):
            unranked[s.label] = "no complete step"
        else:
            usable.append(s)
    rows = tuple(_compare_row(k, lbl, hib, unit, usable) for k, lbl, hib, unit in METRICS)
    ranked = tuple(sorted((s.label for s in usable), key=lambda lbl: next(
        stats.mean(s.phase_samples["step_total"]) for s in usable if s.label == lbl)))
    step = rows[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    breakdown: list[tuple[str, float]] = []
    if len(ranked) >= 2:
        a = next(s for s in usable if s.label == ranked[0])
        b = next(s for s in usable if s.label == ranked[1])
        for phase in BREAKDOWN_PHASES:
            ma, mb = a.phase_means.get(phase), b.phase_means.get(phase)
            if ma is not None or mb is not None:
                breakdown.append((phase, (mb or 0.0) - (ma or 0.0)))
        breakdown.sort(key=lambda x: -abs(x[1]))
    if len(ranked) < 2:
        winner = None
        headline = "no verdict: fewer than two runs completed a step"
        confidence = ""
    elif step.winner:
        winner = step.winner
        lo, hi = step.bands_pct[runner_up]  # type: ignore[index]
        mw, mr = step.means[winner], step.means[runner_up]  # type: ignore[index]
        headline = (f"WINNER: {winner}: {mw:.2f}s per step vs {mr:.2f}s for {runner_up} "
                    f"({mr / mw:.2f}x faster)" if mw else f"WINNER: {winner}")
        confidence = f"{runner_up} takes {lo:.1f}% to {hi:.1f}% longer per step (95% interval, excludes 0)"
    else:
        winner = None
        headline = (f"no clear winner: {ranked[0]} is fastest, but within the noise"
                    if step.noise_known_all else f"no clear winner: {ranked[0]} is fastest; {step.note}")
        if runner_up in step.bands_pct:
            lo, hi = step.bands_pct[runner_up]
            confidence = f"95% interval of the difference vs {runner_up}: {lo:.1f}% to {hi:.1f}% (includes 0)"
        else:
            confidence = step.note
    train_diff = dict(breakdown).get("train")
    caveats = (train_caveat(a, b, train_diff) if train_diff is not None else "",  # breakdown implies a, b
               inplace_caveat(summaries), mismatch_caveat(summaries))
    return Verdict(ranked, unranked, winner, headline, confidence, rows, tuple(breakdown), runner_up,
                   tuple(c for c in caveats if c))
