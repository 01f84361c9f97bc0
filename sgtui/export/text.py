"""The classic 80-column text report, extended to N runs (blocks of 4 columns) with noise bands."""

from __future__ import annotations

import textwrap
from typing import Callable

from sgtui import fmt
from sgtui.export import Combined
from sgtui.state import RunSummary

WIDTH = 80
LABEL_W = 24
COL_W = 14
PER_BLOCK = (WIDTH - LABEL_W) // COL_W  # 4 runs side by side

Getter = Callable[[RunSummary], str]


def _rule(ch: str = "=") -> str:
    return ch * WIDTH


def _title(text: str) -> list[str]:
    return ["", text.upper(), _rule("-")]


def _cell(text: str) -> str:
    text = text if len(text) <= COL_W - 1 else text[: COL_W - 2] + "…"
    return text.rjust(COL_W)


def _table(summaries: list[RunSummary], rows: list[tuple[str, Getter]]) -> list[str]:
    out: list[str] = []
    for i in range(0, len(summaries), PER_BLOCK):
        block = summaries[i: i + PER_BLOCK]
        if i:
            out.append("")
        out.append(" " * LABEL_W + "".join(_cell(s.label) for s in block))
        for name, get in rows:
            out.append(name[:LABEL_W - 1].ljust(LABEL_W) + "".join(_cell(get(s)) for s in block))
    return out


#: Parts of the train phase in the order a step goes through them (Train.parts); `launch` and `load` are a
#: per-step launch's (sessions before 2026-12-03, or --trainer-launch per-step).
TRAIN_PARTS = (("launch", "launch (torchrun)"), ("load", "load"), ("onload", "onload"), ("update", "update"),
               ("export", "export"), ("offload", "offload"))


def _mismatch(s, key: str) -> str:
    """Train/rollout logprob mismatch over the run's steps (mean of means, max of maxima)."""
    m = s.mismatch
    return "n/a" if not m else f"{m[key]:.2g}"


def _last_loss(s: RunSummary) -> str:
    loss = next((x.loss for x in reversed(s.steps) if x.loss is not None), None)
    if loss is None and any(x.simulated_train for x in s.steps):
        return "simulated"  # the simulated trainer holds memory for a while; it has no loss to show
    return fmt.num(loss, 4)


def _phase(name: str) -> Getter:
    return lambda s: fmt.secs(s.phase_means.get(name))


def _band(key: str, unit: str) -> Getter:
    """mean ± half-width of the per-step spread (95% t-interval of the mean)."""
    from sgtui import stats

    def get(s: RunSummary) -> str:
        xs = s.phase_samples.get(key, ())
        if not xs:
            return fmt.MISSING
        m = stats.mean(xs)
        if len(xs) < 2:
            return fmt.unit_value(m, unit)
        half = stats.t_critical_95(len(xs) - 1) * stats.sample_stdev(xs) / len(xs) ** 0.5
        return f"{fmt.unit_value(m, unit)}±{half:.2f}" if unit == "s" else f"{fmt.unit_value(m, unit)}±{half:.0f}"

    return get


def _mem(get: Callable[[RunSummary], float | None]) -> Getter:
    def cell(s: RunSummary) -> str:
        if not s.memory.measured:
            return "n/a"
        return fmt.mib(get(s))

    return cell


def render_text(c: Combined) -> str:
    S = c.summaries
    lines = [_rule(), "sgtui benchmark report".center(WIDTH), _rule()]
    for n, src in enumerate(c.sources, start=1):
        lines.append((f"session #{n}: {src}" if len(c.sources) > 1 else f"session: {src}")[-WIDTH:])
    for label, run, _gpu, _st in c.runs:
        info = run.info
        desc = f"{info.backend} {info.engine_version} {info.strategy} {info.mode} on {info.device}" if info else "?"
        lines.append(f"  {label}: {desc}; {run.status}"[:WIDTH])
    if S and S[0].label and c.runs and c.runs[0][1].info:
        lines.append(f"model: {c.runs[0][1].info.model}"[:WIDTH])

    lines += _title("Rollout (per step, mean over steps)")
    lines += _table(S, [
        ("Output tok/s", lambda s: fmt.num(s.metrics.output_throughput)),
        ("  per-step ±95%", _band("output_throughput", "tok/s")),
        ("Requests ok / errors", lambda s: f"{s.metrics.completed}/{s.metrics.errors}"),
        ("Mean TTFT", lambda s: fmt.ms(s.metrics.mean_ttft_ms)),
        ("P50 / P99 TTFT", lambda s: f"{s.metrics.p50_ttft_ms:.0f}/{s.metrics.p99_ttft_ms:.0f}ms"),
        ("Mean ITL", lambda s: fmt.ms(s.metrics.mean_itl_ms)),
        ("Mean TPOT", lambda s: fmt.ms(s.metrics.mean_tpot_ms)),
        ("P99 E2E latency", lambda s: fmt.ms(s.metrics.p99_e2el_ms)),
        ("Rollout time", _phase("rollout")),
    ])
    lines += _title("Transition overhead (per step)")
    lines += _table(S, [
        ("Offload", _phase("offload")),
        ("Reload", _phase("reload")),
        ("Weight sync", _phase("weight_sync")),
        ("Transition total", _band("transition", "s")),
        ("Startup (first)", lambda s: fmt.secs(s.startup_s)),
    ])
    lines += _title("Training")
    have = {k for s in S for k in s.train_parts}
    parts = [(f"  {label}", key) for key, label in TRAIN_PARTS if key in have]
    lines += _table(S, [
        *((("Trainer launch (once)", lambda s: fmt.secs(s.trainer_start_s)),)
          if any(s.trainer_start_s is not None for s in S) else ()),
        ("Train time", _phase("train")),
        *((label, lambda s, k=key: fmt.secs(s.train_parts.get(k))) for label, key in parts),
        *((("Logprob mismatch |d|", lambda s: _mismatch(s, "mean_abs")),
           ("  max |d|", lambda s: _mismatch(s, "max_abs")),
           ("  KL k3 (engine||trn)", lambda s: _mismatch(s, "k3"))) if any(s.mismatch for s in S) else ()),
        ("Last loss", _last_loss),
        ("Engine CPU meanwhile", lambda s: "n/a" if s.engine_cpu_in_train is None
         else f"{s.engine_cpu_in_train:.2f} cores"),
        ("Train tokens/step", lambda s: fmt.num(
            sum(x.train_tokens for x in s.steps) / len(s.steps) if s.steps else None, 0)),
    ])
    lines += _title("End-to-end")
    lines += _table(S, [
        ("Steps completed", lambda s: f"{len(s.completed_steps)}/{len(s.steps)}"),
        ("Step time ±95%", _band("step_total", "s")),
        ("Status", lambda s: s.status),
    ])
    lines += _title("GPU memory (sampled)")
    measured = [s for s in S if s.memory.measured]
    if not measured:
        reasons = sorted({s.memory.reason for s in S})
        lines.append(f"not measured: {'; '.join(reasons)}"[:WIDTH])
    else:
        lines += _table(S, [
            ("Idle floor before run", _mem(lambda s: s.memory.idle_floor_mib)),
            ("Peak during run", _mem(lambda s: s.memory.peak_mib)),
            ("Freed at offload", _mem(lambda s: s.memory.mean_freed_mib)),
            ("Held after offload", _mem(lambda s: s.memory.mean_held_mib)),
        ])
        sources = sorted({s.memory.source for s in measured})
        lines.append(f"freed/held: {' and '.join(sources)} (per-process memory where NVML maps it)"[:WIDTH])
        if len(measured) < len(S):
            lines.append("n/a: " + "; ".join(f"{s.label}: {s.memory.reason}" for s in S if not s.memory.measured))
    v = c.verdict
    lines += ["", _rule(), "VERDICT", _rule("-")]
    lines.append(v.headline[:WIDTH])
    if v.confidence:
        lines.append(v.confidence[:WIDTH])
    for caveat in v.caveats:
        lines += textwrap.wrap("note: " + caveat, WIDTH, subsequent_indent="  ")
    if v.breakdown and v.runner_up:
        lines.append(f"per-phase difference, {v.runner_up} minus {v.ranked[0]} (s/step):"[:WIDTH])
        for phase, d in v.breakdown:
            lines.append(f"  {phase:<14}{d:+9.2f}s")
    for label, why in v.unranked.items():
        lines.append(f"not ranked: {label} ({why})"[:WIDTH])
    lines.append("")
    lines.append("metric".ljust(22) + "best".ljust(18) + "notes")
    for row in v.rows:
        if row.best is None:
            continue
        others = ", ".join(f"{k} {fmt.pct(d)} {fmt.band(*row.bands_pct[k])}" for k, d in row.diffs_pct.items())
        lines.append((row.label[:21].ljust(22) + row.best[:17].ljust(18) + row.note)[:WIDTH])
        if others:
            lines.append(("    " + others)[:WIDTH])
    errors = [(label, e) for label, run, _g, _s in c.runs for e in run.errors]
    if errors:
        lines += _title("Errors")
        for label, e in errors:
            lines.append(f"{label} step {e.step}: [{e.category}] {e.message}"[:WIDTH])
            if e.advice:
                lines.append(f"  -> {e.advice}"[:WIDTH])
    if c.problems:
        lines += _title("Session file problems")
        lines += [p[-WIDTH:] for p in c.problems[:20]]
    lines.append(_rule())
    return "\n".join(line.rstrip() for line in lines) + "\n"
