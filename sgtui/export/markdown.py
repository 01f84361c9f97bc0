"""Markdown export for a PR comment: one table of key numbers, the verdict, the metric comparison."""

from __future__ import annotations

from sgtui import drift, fmt, goodput
from sgtui.export import Combined
from sgtui.export.text import TRAIN_PARTS, memory_notes
from sgtui.findings import finding_line


def render_markdown(c: Combined) -> str:
    S = c.summaries
    v = c.verdict
    gp = goodput.by_label(((s.label, run) for s, (_l, run, _g, _st) in zip(S, c.runs)), c.options.goodput)
    head = "| metric | " + " | ".join(f"`{s.label}`" for s in S) + " |"
    sep = "|---|" + "---:|" * len(S)
    rows = [
        ("output tok/s", lambda s: fmt.num(s.phase_means.get("output_throughput"))),
        ("mean TTFT", lambda s: fmt.ms(s.phase_means.get("mean_ttft_ms"))),
        ("mean ITL", lambda s: fmt.ms(s.phase_means.get("mean_itl_ms"))),
        ("mean TPOT", lambda s: fmt.ms(s.phase_means.get("mean_tpot_ms"))),
        ("p99 E2E", lambda s: fmt.ms(s.phase_means.get("p99_e2el_ms"))),
        ("p99 TTFT, all requests pooled", lambda s: fmt.ms(s.metrics.p99_ttft_ms)),
        ("requests ok/errors, all steps", lambda s: f"{s.metrics.completed}/{s.metrics.errors}"),
        *([(f"goodput req/s, all steps ({goodput.slo_text(c.options.goodput)})",
            lambda s: f"{fmt.num(gp[s.label].request_goodput, 2)} ({gp[s.label].good}/{gp[s.label].completed} ok)")]
          if gp else []),
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
        ("first step (apart)", lambda s: fmt.secs(s.first_step.total_s) if s.first_step else fmt.MISSING),
        ("startup", lambda s: fmt.secs(s.startup_s)),
        ("freed at offload", lambda s: fmt.mib(s.memory.mean_freed_mib) if s.memory.measured else s.memory.reason),
        ("held after offload", lambda s: fmt.mib(s.memory.mean_held_mib) if s.memory.measured else s.memory.reason),
        ("held after offload, device above idle floor",
         lambda s: fmt.mib(s.memory.device_mean_held_mib) if s.memory.measured else s.memory.reason),
        ("GPU memory peak, most at once", lambda s: fmt.mib(s.memory.peak_mib) if s.memory.measured else s.memory.reason),
        ("status", lambda s: s.status),
    ]
    lines = ["## sgtui: " + ", ".join(f"`{s.label}`" for s in S), "", f"**{v.headline}**"]
    if v.confidence:
        lines.append(f"<br>{v.confidence}")
    for caveat in v.caveats:
        lines.append(f"<br>note: {caveat}")
    for f in v.findings:
        lines.append(f"<br>{finding_line(f)}")
    lines += ["", *(f"<br>{line}" for line in drift.design_lines(c.sources, [st for _l, _r, _g, st in c.runs]))]
    if v.basis:
        lines += ["", f"Per-step values, mean over the {v.basis}."]
    lines += ["", head, sep]
    lines += ["| " + name + " | " + " | ".join(get(s) for s in S) + " |" for name, get in rows]
    if any(s.memory.measured for s in S):
        lines += ["", "Memory: " + "; ".join(memory_notes(S)) + "."]
    lines += ["", "| metric | best | difference (95% band) | note |", "|---|---|---|---|"]
    for r in v.rows:
        if r.best is None:
            continue
        diffs = "; ".join(f"`{k}` {r.versus(k)}" for k in r.diffs_abs)
        lines.append(f"| {r.label} | `{r.best}` | {diffs or '—'} | {r.note} |")
    if v.breakdown:
        lines += ["", f"Per-phase difference, `{v.runner_up}` minus `{v.ranked[0]}`: " +
                  ", ".join(f"{p} {d:+.2f}s" for p, d in v.breakdown)]
    return "\n".join(lines) + "\n"
