"""Markdown export for a PR comment: one table of key numbers, the verdict, the metric comparison."""

from __future__ import annotations

from sgtui import fmt
from sgtui.export import Combined
from sgtui.export.text import TRAIN_PARTS


def render_markdown(c: Combined) -> str:
    S = c.summaries
    v = c.verdict
    head = "| metric | " + " | ".join(f"`{s.label}`" for s in S) + " |"
    sep = "|---|" + "---:|" * len(S)
    rows = [
        ("output tok/s", lambda s: fmt.num(s.metrics.output_throughput)),
        ("mean TTFT", lambda s: fmt.ms(s.metrics.mean_ttft_ms)),
        ("p99 TTFT", lambda s: fmt.ms(s.metrics.p99_ttft_ms)),
        ("mean ITL", lambda s: fmt.ms(s.metrics.mean_itl_ms)),
        ("mean TPOT", lambda s: fmt.ms(s.metrics.mean_tpot_ms)),
        ("p99 E2E", lambda s: fmt.ms(s.metrics.p99_e2el_ms)),
        ("requests ok/errors", lambda s: f"{s.metrics.completed}/{s.metrics.errors}"),
        ("offload", lambda s: fmt.secs(s.phase_means.get("offload"))),
        ("train", lambda s: fmt.secs(s.phase_means.get("train")) + (
            " (" + ", ".join(f"{label} {fmt.secs(s.train_parts[k])}" for k, label in TRAIN_PARTS
                             if k in s.train_parts) + ")" if s.train_parts else "")),
        ("trainer launch (once)", lambda s: fmt.secs(s.trainer_start_s)),
        ("logprob mismatch mean/max \\|Δ\\|, k3", lambda s: (
            f"{s.mismatch['mean_abs']:.2g} / {s.mismatch['max_abs']:.2g}, {s.mismatch['k3']:.2g}"
            if s.mismatch else "n/a")),
        ("reload", lambda s: fmt.secs(s.phase_means.get("reload"))),
        ("weight sync", lambda s: fmt.secs(s.phase_means.get("weight_sync"))),
        ("step total", lambda s: fmt.secs(s.phase_means.get("step_total"))),
        ("startup", lambda s: fmt.secs(s.startup_s)),
        ("freed at offload", lambda s: fmt.mib(s.memory.mean_freed_mib) if s.memory.measured else s.memory.reason),
        ("held after offload", lambda s: fmt.mib(s.memory.mean_held_mib) if s.memory.measured else s.memory.reason),
        ("status", lambda s: s.status),
    ]
    lines = ["## sgtui: " + ", ".join(f"`{s.label}`" for s in S), "", f"**{v.headline}**"]
    if v.confidence:
        lines.append(f"<br>{v.confidence}")
    for caveat in v.caveats:
        lines.append(f"<br>note: {caveat}")
    lines += ["", head, sep]
    lines += ["| " + name + " | " + " | ".join(get(s) for s in S) + " |" for name, get in rows]
    lines += ["", "| metric | best | difference (95% band) | note |", "|---|---|---|---|"]
    for r in v.rows:
        if r.best is None:
            continue
        diffs = "; ".join(f"`{k}` {fmt.pct(d)} {fmt.band(*r.bands_pct[k])}" for k, d in r.diffs_pct.items())
        lines.append(f"| {r.label} | `{r.best}` | {diffs or '—'} | {r.note} |")
    if v.breakdown:
        lines += ["", f"Per-phase difference, `{v.runner_up}` minus `{v.ranked[0]}`: " +
                  ", ".join(f"{p} {d:+.2f}s" for p, d in v.breakdown)]
    return "\n".join(lines) + "\n"
