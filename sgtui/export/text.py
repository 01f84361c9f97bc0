"""The classic 80-column text report, extended to N runs (blocks of 4 columns) with noise bands."""

from __future__ import annotations

import textwrap
from typing import Callable

from sgtui import drift, external, fmt, goodput
from sgtui.export import Combined
from sgtui.findings import finding_line
from sgtui.labels import session_tag
from sgtui.state import MEMORY_DEFINITIONS, RunSummary

WIDTH = 80
LABEL_W = 24
COL_W = 14
PER_BLOCK = (WIDTH - LABEL_W) // COL_W  # 4 runs side by side

Getter = Callable[[RunSummary], str]


def _rule(ch: str = "=") -> str:
    return ch * WIDTH


def _title(text: str) -> list[str]:
    return ["", text.upper(), _rule("-")]


def _wrap(text: str) -> list[str]:
    """Long lines wrap (a path, a headline, a caveat); cutting them lost their start or their end."""
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False) or [""]


def _cell(text: str) -> str:
    text = text if len(text) <= COL_W - 1 else text[: COL_W - 2] + "…"
    return text.rjust(COL_W)


def _head_lines(label: str) -> list[str]:
    """A run label as a column head, wrapped at its dashes onto up to 3 lines, never cut: elided heads read
    `vllm-s…p1-ipc` and `sglang…se-ipc` on the H100 full-sync session of 2026-12-06. Only a label that does
    not fit 3 lines is elided, keeping its start and its end (where a sync method is named)."""
    width = COL_W - 1
    lines = textwrap.wrap(label, width, break_on_hyphens=True, break_long_words=False) or [""]
    if len(lines) <= 3 and all(len(x) <= width for x in lines):
        return lines
    keep = width - 1
    return [label[: keep - keep // 2] + "…" + label[-(keep // 2):]]


def _heads(labels: list[str]) -> list[str]:
    """The head rows of one block of columns, bottom-aligned so every column's last line sits on the table."""
    cols = [_head_lines(x) for x in labels]
    depth = max(len(c) for c in cols)
    cols = [[""] * (depth - len(c)) + c for c in cols]
    return [" " * LABEL_W + "".join(c[i].rjust(COL_W) for c in cols) for i in range(depth)]


def _table(summaries: list[RunSummary], rows: list[tuple[str, Getter]]) -> list[str]:
    out: list[str] = []
    for i in range(0, len(summaries), PER_BLOCK):
        block = summaries[i: i + PER_BLOCK]
        if i:
            out.append("")
        out.extend(_heads([s.label for s in block]))
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


def _steady(key: str, show: Callable[[float | None], str]) -> Getter:
    """The steady-state mean of a per-step value: the number the verdict compares under the same label."""
    return lambda s: show(s.phase_means.get(key))


def _first_step(s: RunSummary) -> str:
    first = s.first_step
    if first is None or first.total_s is None:
        return fmt.MISSING
    return fmt.secs(first.total_s) + (" (in)" if s.first_step_included else "")


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


def memory_notes(S: list[RunSummary]) -> list[str]:
    """The ledger's definitions and the GPU sampling interval, as every report prints them under its table."""
    measured = [s for s in S if s.memory.measured]
    intervals = sorted({s.memory.sample_interval_s for s in measured if s.memory.sample_interval_s})
    every = ("GPU sampled every " + " / ".join(f"{x:g} s" for x in intervals) if intervals
             else "GPU sampling interval not recorded (older session)")
    out = [f"held, freed: {MEMORY_DEFINITIONS['held']}", f"device: {MEMORY_DEFINITIONS['device_held']}",
           f"peak: {MEMORY_DEFINITIONS['peak']}", every]
    if any(s.memory.trainer_mean_rollout_mib is not None for s in measured):
        out.append(f"trainer: {MEMORY_DEFINITIONS['trainer']}")
    unmapped = [s.label for s in measured if s.memory.source != "engine processes"]
    if unmapped:
        out.append(f"held, freed n/a for {', '.join(unmapped)}: NVML mapped no process to the run")
    return out


def _mem(get: Callable[[RunSummary], float | None]) -> Getter:
    def cell(s: RunSummary) -> str:
        if not s.memory.measured:
            return "n/a"
        return fmt.mib(get(s))

    return cell


def _sync_rows(summaries: list[RunSummary]) -> list[tuple[str, Getter]]:
    """A full-weight sync's numbers under its phase (RunSummary.sync); no rows when no run moved full weights."""
    if not any(s.sync for s in summaries):
        return []

    def num(key: str, show: Callable[[float], str]) -> Getter:
        return lambda s: show(s.sync[key]) if key in s.sync else "n/a"

    rows = [("  bytes moved", num("bytes", lambda b: f"{b / 1e6:.1f} MB" if b < 1e9 else f"{b / 1e9:.2f} GB")),
            ("  GB/s", num("gbps", lambda g: f"{g:.2f}")),
            ("  engine not serving", num("paused_s", fmt.secs))]
    if any("setup_s" in s.sync for s in summaries):  # vLLM's IPC transfer engine; nothing to set up otherwise
        rows.append(("  set-up (once)", num("setup_s", fmt.secs)))
    return rows


def _goodput_rows(c: Combined) -> list[tuple[str, Getter]]:
    """vLLM's --goodput over the same pooled requests (sgtui/goodput.py); no rows without SLOs."""
    runs = ((s.label, run) for s, (_l, run, _g, _st) in zip(c.summaries, c.runs))
    gp = goodput.by_label(runs, c.options.goodput)
    if not gp:
        return []
    return [("Goodput req/s", lambda s: fmt.num(gp[s.label].request_goodput, 2)),
            ("  good / ok requests", lambda s: f"{gp[s.label].good}/{gp[s.label].completed}")]


def render_text(c: Combined) -> str:
    S = c.summaries
    lines = [_rule(), "sgtui benchmark report".center(WIDTH), _rule()]
    for n, src in enumerate(c.sources, start=1):
        lines += _wrap(f"session {session_tag(n)}: {src}" if len(c.sources) > 1 else f"session: {src}")
    for line in drift.design_lines(c.sources, [st for _l, _r, _g, st in c.runs]):
        lines += _wrap(line)
    for label, run, _gpu, _st in c.runs:
        info = run.info
        sync = info.config.get("sync") if info and isinstance(info.config, dict) else None
        strategy = f"{info.strategy}+{sync}" if info and sync else (info.strategy if info else "")
        desc = f"{info.backend} {info.engine_version} {strategy} {info.mode} on {info.device}" if info else "?"
        lines += _wrap(f"  {label}: {desc}; {run.status}")
        if info and (note := external.report_line(info.config)):
            lines += _wrap(f"    {note}")
    if S and S[0].label and c.runs and c.runs[0][1].info:
        lines += _wrap(f"model: {c.runs[0][1].info.model}")

    if c.verdict.basis:
        lines += _wrap(c.verdict.basis)
    lines += _title("Rollout (steady state: mean of per-step values)")
    lines += _table(S, [
        ("Output tok/s ±95%", _band("output_throughput", "tok/s")),
        ("Mean TTFT", _steady("mean_ttft_ms", fmt.ms)),
        ("Mean ITL", _steady("mean_itl_ms", fmt.ms)),
        ("Mean TPOT", _steady("mean_tpot_ms", fmt.ms)),
        ("P99 E2E latency", _steady("p99_e2el_ms", fmt.ms)),
        ("Rollout time", _phase("rollout")),
    ])
    lines.append("All requests of every step pooled (as vllm bench serve):")
    lines += _table(S, [
        ("Requests ok / errors", lambda s: f"{s.metrics.completed}/{s.metrics.errors}"),
        ("Output tok/s", lambda s: fmt.num(s.metrics.output_throughput)),
        ("P50 / P99 TTFT", lambda s: f"{s.metrics.p50_ttft_ms:.0f}/{s.metrics.p99_ttft_ms:.0f}ms"),
        ("P99 E2E latency", lambda s: fmt.ms(s.metrics.p99_e2el_ms)),
        *_goodput_rows(c),
    ])
    if c.options.goodput:
        slos = goodput.slo_text(c.options.goodput)
        lines += _wrap(f"goodput: requests meeting every SLO ({slos}, as vllm bench serve --goodput) per second "
                       "of rollout")
    lines += _title("Transition overhead (per step)")
    lines += _table(S, [
        ("Offload", _phase("offload")),
        ("Reload", _phase("reload")),
        ("Weight sync", _phase("weight_sync")),
        *_sync_rows(S),
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
        ("First step (apart)", _first_step),
        ("Status", lambda s: s.status),
    ])
    lines += _title("GPU memory (sampled)")
    measured = [s for s in S if s.memory.measured]
    if not measured:
        reasons = sorted({s.memory.reason for s in S})
        lines += _wrap(f"not measured: {'; '.join(reasons)}")
    else:
        lines += _table(S, [
            ("Idle floor before run", _mem(lambda s: s.memory.idle_floor_mib)),
            ("Peak, most at once", _mem(lambda s: s.memory.peak_mib)),
            ("Freed at offload", _mem(lambda s: s.memory.mean_freed_mib)),
            ("Held after offload", _mem(lambda s: s.memory.mean_held_mib)),
            ("  device, above floor", _mem(lambda s: s.memory.device_mean_held_mib)),
            *((("Trainer kept in rollout", _mem(lambda s: s.memory.trainer_mean_rollout_mib)),)
              if any(s.memory.trainer_mean_rollout_mib is not None for s in measured) else ()),
        ])
        for note in memory_notes(S):
            lines += textwrap.wrap(note, WIDTH, subsequent_indent="  ")
        if len(measured) < len(S):
            lines.append("n/a: " + "; ".join(f"{s.label}: {s.memory.reason}" for s in S if not s.memory.measured))
    v = c.verdict
    lines += ["", _rule(), "VERDICT", _rule("-")]
    lines += _wrap(v.headline)
    if v.confidence:
        lines += _wrap(v.confidence)
    for caveat in v.caveats:
        lines += _wrap("note: " + caveat)
    for f in v.findings:
        lines += _wrap(finding_line(f))
    if v.breakdown and v.runner_up:
        lines += _wrap(f"per-phase difference, {v.runner_up} minus {v.ranked[0]} (s/step):")
        for phase, d in v.breakdown:
            lines.append(f"  {phase:<14}{d:+9.2f}s")
    for label, why in v.unranked.items():
        lines += _wrap(f"not ranked: {label} ({why})")
    lines.append("")
    best_w = max([18] + [len(row.best) + 1 for row in v.rows if row.best is not None])
    lines.append("metric".ljust(22) + "best".ljust(best_w) + "notes")
    for row in v.rows:
        if row.best is None:
            continue
        others = ", ".join(f"{k} {row.versus(k)}" for k in row.diffs_abs)
        # run labels whole (a cut `sglang-release-di` names no run); a long note wraps under the notes column
        head = row.label[:21].ljust(22) + row.best.ljust(best_w)
        note = textwrap.wrap(row.note, max(20, WIDTH - len(head)), break_on_hyphens=False) or [""]
        lines.append(head + note[0])
        lines += [" " * len(head) + x for x in note[1:]]
        if others:
            lines += textwrap.wrap(others, WIDTH, initial_indent="    ", subsequent_indent="    ",
                                   break_on_hyphens=False)
    errors = [(label, e) for label, run, _g, _s in c.runs for e in run.errors]
    if errors:
        lines += _title("Errors")
        for label, e in errors:
            lines += _wrap(f"{label} step {e.step}: [{e.category}] {e.message}")
            if e.advice:
                lines += _wrap(f"  -> {e.advice}")
    if c.problems:
        lines += _title("Session file problems")
        lines += [line for p in c.problems[:20] for line in _wrap(p)]
    lines.append(_rule())
    return "\n".join(line.rstrip() for line in lines) + "\n"
