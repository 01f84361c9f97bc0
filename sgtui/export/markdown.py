"""Markdown export for a PR comment: one table of key numbers, the verdict, the metric comparison, and a
Mermaid gantt of one step's phases per run (GitHub renders ```mermaid blocks), so a reviewer sees where the
step's time goes without opening a trace.

Contract: `render_markdown(c) -> str` and `mermaid_gantt(c) -> list[str]`, pure (no IO).
"""

from __future__ import annotations

import re

from sgtui import drift, fmt, goodput
from sgtui.export import Combined
from sgtui.export.text import TRAIN_PARTS, memory_notes
from sgtui.findings import finding_line
from sgtui.labels import legend
from sgtui.state import PhaseSpan, RunState

#: The step the gantt shows: step 1 pays one-time costs (CUDA graphs, first LoRA load), so the first steady
#: step is the representative one; a run with a single step shows that one.
GANTT_STEP = 2
#: Axis tick spacings the gantt picks from, seconds (mermaid's tickInterval).
TICKS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600)


def gantt_step(run: RunState) -> tuple[int, list[PhaseSpan]] | None:
    """The step to draw and its finished phases in start order: step 2 when it has any, else the first RL step
    that has. None when no step has a finished phase (a run that failed during startup)."""
    steps = run.rl_steps
    order = ([GANTT_STEP] if GANTT_STEP in steps else []) + [n for n in steps if n != GANTT_STEP]
    for n in order:
        spans = sorted((sp for sp in run.steps[n].phases.values() if sp.end is not None and sp.end >= sp.start),
                       key=lambda sp: sp.start)
        if spans:
            return n, spans
    return None


def _mermaid_text(s: str) -> str:
    """Mermaid gantt ends a task's name at ':' and reads '#...;' as an entity: keep names free of them."""
    return re.sub(r"[:;#]", " ", s).strip()


def mermaid_gantt(c: Combined) -> list[str]:
    """One ```mermaid gantt block: a section per run, a task per phase of its gantt step. Times are
    milliseconds from the step's first phase start (`dateFormat x`: Unix ms, so 0 is the step's start and the
    axis reads minutes:seconds); each task's name carries its duration, since the axis is coarse. A phase
    shorter than 1 ms is drawn 1 ms long so that it stays a task."""
    sections: list[str] = []
    longest = 0
    for i, (label, run, _g, _st) in enumerate(c.runs, start=1):
        picked = gantt_step(run)
        if picked is None:
            continue
        n, spans = picked
        t0 = spans[0].start
        sections.append(f"    section {_mermaid_text(label)} (step {n})")
        for j, sp in enumerate(spans, start=1):
            start = round((sp.start - t0) * 1e3)
            end = max(round((sp.end - t0) * 1e3), start + 1)  # type: ignore[operator]
            name = _mermaid_text(f"{sp.name} {sp.end - sp.start:.2f}s")  # type: ignore[operator]
            sections.append(f"    {name} :r{i}p{j}, {start}, {end}")
            longest = max(longest, end)
    if not sections:
        return []
    # whole seconds per tick, about 10 ticks at most (mermaid's own choice ticks every 0.5 s: 00:00, 00:00, ...)
    tick = next((t for t in TICKS_S if longest / 1e3 / t <= 10), TICKS_S[-1])
    return ["```mermaid", "gantt", "    title One step's phases per run (time from the step's start)",
            "    dateFormat x", "    axisFormat %M:%S", f"    tickInterval {tick}second", *sections, "```"]


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
    if len(c.sources) > 1:  # the key of the "#n" tags colliding run labels carry (`sgtui.labels`)
        lines.append("<br>sessions: " + ", ".join(f"`{tag}` {name}" for tag, name in legend(c.sources)))
    lines += ["", *(f"<br>{line}" for line in drift.design_lines(c.sources, [st for _l, _r, _g, st in c.runs]))]
    from sgtui.external import report_line  # runs on a server sgtui did not start: what it did not control

    lines += [f"<br>`{label}`: {note}" for label, run, _g, _st in c.runs
              if run.info and (note := report_line(run.info.config))]
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
    if gantt := mermaid_gantt(c):
        lines += ["", "Where one step's time goes (step 2, the first steady step, where the run has one):", "",
                  *gantt]
    return "\n".join(lines) + "\n"
