"""Compare runs metric by metric with noise bands, and name a winner only when the data supports it.

The noise is the per-step variation of each run: every metric is compared
with a Welch t-interval of the difference of per-step means. A difference
whose 95% interval contains zero is reported as "within noise", never as a
win. The overall verdict is the lowest mean total step time (what an RL
user pays for), explained by the per-phase differences that make it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sgtui import compare, drift, fmt, stats
from sgtui.findings import Finding, findings
from sgtui.options import ReportOptions
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

#: Resolution per unit: (absolute, relative). Two runs whose means differ by less than
#: max(absolute, relative x the best's mean) are "equal (below resolution)", however small the noise: a
#: statistically sure 1 % or a microsecond is no reason to pick an engine (a `keep` strategy's offload of
#: microseconds was called "better outside noise", +555,583 %). 10 ms is below what a phase boundary
#: measures reliably (event timestamps cross processes and an event loop); 1 ms is the resolution of a
#: streamed chunk's arrival under load; 2 % is the run-to-run spread of back-to-back rollouts on an idle box.
#: Mean ITL and TPOT average thousands of token gaps, so their absolute resolution is finer (0.1 ms): with
#: the 1 ms of a single arrival, 4.2 against 5.0 ms (19 %) read as "equal".
#: No percentage is printed where the best's mean is below the absolute resolution: the base is noise.
RESOLUTION: dict[str, tuple[float, float]] = {
    "s": (0.010, 0.02),  # phase and step times
    "ms": (1.0, 0.02),  # request latencies
    "tok/s": (0.0, 0.02),  # throughput: relative only
    "mean_itl_ms": (0.1, 0.02),  # by metric key, before the unit
    "mean_tpot_ms": (0.1, 0.02),
}
EQUAL_NOTE = "equal (below resolution)"


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
    #: other run -> its mean minus the best's, in the metric's unit (positive = worse); always there, while
    #: diffs_pct/bands_pct leave out the runs compared to a best whose mean is below the absolute resolution
    diffs_abs: dict[str, float] = field(default_factory=dict)
    equal: dict[str, bool] = field(default_factory=dict)  # other run -> difference below RESOLUTION

    def versus(self, run: str) -> str:
        """How `run` compares to the best, as every report words it: "+12.3% [+5,+19]%", "equal (below
        resolution)", or an absolute difference where a percentage of a sub-resolution base would mislead."""
        if self.equal.get(run):
            return EQUAL_NOTE
        if run in self.diffs_pct:
            lo, hi = self.bands_pct[run]
            # one step a side: no noise estimate, so no band (it would read as a certain difference)
            return fmt.pct(self.diffs_pct[run]) + (f" {fmt.band(lo, hi)}" if hi > lo else "")
        if run in self.diffs_abs:
            return f"{self.diffs_abs[run]:+.3g} {self.unit}"
        return ""


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
    #: which steps the samples are, as one line ("steady state: steps 2-4; step 1 apart ...")
    basis: str = ""
    differences: tuple[compare.Difference, ...] = ()  # what differs between the runs besides the engine
    findings: tuple[Finding, ...] = ()  # named findings per run (sgtui.findings): what a skeptic checks first


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


def _compare_row(key: str, label: str, hib: bool, unit: str, runs: list[RunSummary], rank: bool = True) -> MetricRow:
    samples = {r.label: list(r.phase_samples.get(key, ())) for r in runs}
    means = {k: (stats.mean(v) if v else None) for k, v in samples.items()}
    have = [k for k, v in means.items() if v is not None]
    if not have:
        return MetricRow(key, label, unit, hib, means, None, {}, {}, {}, None, "no data")
    best = (max if hib else min)(have, key=lambda k: means[k])  # type: ignore[arg-type, return-value]
    diffs, bands, sig, diffs_abs, equal = {}, {}, {}, {}, {}
    noise_known = True
    res_abs, res_rel = RESOLUTION.get(key, RESOLUTION.get(unit, (0.0, 0.0)))
    base = abs(means[best])  # type: ignore[arg-type]
    for other in have:
        if other == best:
            continue
        c = stats.welch(samples[best], samples[other])
        sign = -1.0 if hib else 1.0  # positive % = other is worse
        diffs_abs[other] = sign * c.diff
        equal[other] = abs(c.diff) < max(res_abs, res_rel * base)
        if base >= res_abs and base > 0:
            lo, hi = sorted((sign * c.pct(c.ci_low), sign * c.pct(c.ci_high)))
            diffs[other] = sign * c.pct(c.diff)
            bands[other] = (lo, hi)
        sig[other] = c.significant and not equal[other]
        noise_known &= c.noise_known
    winner = best if rank and len(have) > 1 and sig and all(sig.values()) else None
    if len(have) < 2:
        note = "only one run has data"
    elif all(equal.values()):
        note = EQUAL_NOTE
    elif not noise_known:
        note = "1 step: no noise estimate"
    elif not rank:
        note = "side by side, not ranked"
    elif winner:
        note = f"{best} better outside noise"
    elif any(sig.values()):
        note = f"{best} best; some differences within noise"
    else:
        note = "within noise"
    return MetricRow(key, label, unit, hib, means, best, diffs, bands, sig, winner, note, noise_known, diffs_abs,
                     equal)


def verdict(summaries: list[RunSummary], opts: ReportOptions = ReportOptions()) -> Verdict:
    unranked: dict[str, str] = {}
    usable = []
    for s in summaries:
        if s.status == "failed":
            unranked[s.label] = "failed" + (f" ({s.errors[-1].category})" if s.errors else "")
        elif not s.phase_samples.get("step_total"):
            unranked[s.label] = "no complete step"
        else:
            usable.append(s)
    diffs = compare.differences([s.profile for s in summaries if s.profile is not None])
    block = compare.blocking(diffs)
    rank = not block or opts.allow_mismatch
    rows = tuple(_compare_row(k, lbl, hib, unit, usable, rank) for k, lbl, hib, unit in METRICS)
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
    elif not rank:
        winner = None
        headline = compare.no_verdict_headline(block)
        confidence = f"{ranked[0]} has the shortest step; side by side only"
    elif step.winner:
        winner = step.winner
        mw, mr = step.means[winner], step.means[runner_up]  # type: ignore[index]
        headline = (f"WINNER: {winner}: {mw:.2f}s per step vs {mr:.2f}s for {runner_up} "
                    f"({mr / mw:.2f}x faster)" if mw else f"WINNER: {winner}")
        if runner_up in step.bands_pct:
            lo, hi = step.bands_pct[runner_up]
            confidence = f"{runner_up} takes {lo:.1f}% to {hi:.1f}% longer per step (95% interval, excludes 0)"
        else:  # a best step below the absolute resolution: no percentage of it
            confidence = f"{runner_up}: {step.versus(runner_up)} per step"  # type: ignore[arg-type]
    else:
        winner = None
        band = step.bands_pct.get(runner_up)  # type: ignore[arg-type]
        if step.equal.get(runner_up):  # type: ignore[arg-type]
            res_abs, res_rel = RESOLUTION["s"]
            headline = (f"no clear winner: {ranked[0]} and {runner_up} are equal per step (below the "
                        f"resolution: {res_abs * 1000:.0f} ms or {res_rel:.0%})")
            confidence = (f"95% interval of the difference vs {runner_up}: {band[0]:.1f}% to {band[1]:.1f}% "
                          f"({'includes' if band[0] <= 0 <= band[1] else 'excludes'} 0)" if band else step.note)
        else:
            headline = (f"no clear winner: {ranked[0]} is fastest, but within the noise" if step.noise_known_all
                        else f"no clear winner: {ranked[0]} is fastest; {step.note}")
            confidence = (f"95% interval of the difference vs {runner_up}: {band[0]:.1f}% to {band[1]:.1f}% "
                          "(includes 0)" if band else step.note)
    train_row = next(r for r in rows if r.key == "train")
    # a train difference below the resolution needs no explaining; `equal` is keyed by the run that is not
    # the best at training, which may be either of the two
    pair = set(ranked[:2])
    train_equal = any(train_row.equal.get(k) for k in pair if k != train_row.best)
    train_diff = None if train_equal else dict(breakdown).get("train")
    caveats = (*(d.caveat() for d in diffs),
               "ranked although the runs differ in " + " and ".join(d.title for d in block) + " (--allow-mismatch)"
               if block and rank and len(ranked) >= 2 else "",
               train_caveat(a, b, train_diff) if train_diff is not None else "",  # breakdown implies a, b
               inplace_caveat(summaries), mismatch_caveat(summaries), *drift.drift_caveats(summaries))
    return Verdict(ranked, unranked, winner, headline, confidence, rows, tuple(breakdown), runner_up,
                   tuple(c for c in caveats if c), basis(summaries, opts), diffs, findings(summaries))


def basis(summaries: list[RunSummary], opts: ReportOptions) -> str:
    """Which steps every mean and sample is over, once for all runs when they agree."""
    labels = {s.label: s.steady_label for s in summaries if s.steady_steps}
    if not labels:
        return ""
    shown = next(iter(labels.values())) if len(set(labels.values())) == 1 else "; ".join(
        f"{k} {v}" for k, v in labels.items())
    if opts.include_first_step:
        tail = "step 1 included (--include-first-step)"
    elif any(not s.first_step_included and s.first_step for s in summaries):
        tail = "step 1 shown apart (--include-first-step counts it)"
    elif all(s.steady_steps == (1,) for s in summaries if s.steady_steps):
        tail = "no later full step, so step 1 stands for the steady state"
    else:
        return f"steady state: {shown}"
    return f"steady state: {shown}; {tail}"
