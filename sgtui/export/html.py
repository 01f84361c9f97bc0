"""HTML export: ONE self-contained page to attach to a PR or mail around, opened from disk with no server and
no network: the verdict, phase-per-step stacked bars per run, GPU memory over time per run, a table of key
numbers and the full text report.

Contract: `render_html(c) -> str`, pure (no IO besides matplotlib drawing into memory).

Why matplotlib rendering inline SVG (and not plotly or a JS chart library): SVG is drawn once, here; the page
holds no script at all, weighs tens of kB instead of the megabytes an inlined plotly.js costs, prints, and
every browser (and a mail client) shows it. Text stays text in the SVG (`svg.fonttype: none`), so the run
labels are searchable and selectable. matplotlib is imported only inside this module's functions, and only the
Figure API is used (never pyplot): no GUI backend is chosen, no global figure state is touched, and every other
command does not pay for the import.

Every number comes from `sgtui.state` / `sgtui.verdict` through `Combined`, as in every other export.
"""

from __future__ import annotations

import io
import re
from html import escape

from sgtui import drift, fmt
from sgtui.export import Combined
from sgtui.findings import finding_line
from sgtui.state import RunState, RunSummary

#: Phases in the order a step runs them; anything else a step recorded is drawn after, as it is named.
PHASE_ORDER = ("rollout", "offload", "train", "reload", "weight_sync", "restart")
PHASE_COLORS = {"rollout": "#4C72B0", "offload": "#DD8452", "train": "#55A868", "reload": "#C44E52",
                "weight_sync": "#8172B3", "restart": "#937860"}
EXTRA_COLORS = ("#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
#: Subplots per row in the phase chart: more runs wrap onto further rows, so bars stay wide enough to read.
BAR_COLUMNS = 3

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
.headline{font-size:1.2em;font-weight:600;padding:.6em .8em;background:#f3f6fa;border-left:4px solid #4C72B0}
.chart svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em}
td.num{text-align:right;font-variant-numeric:tabular-nums}pre{font-size:.8em;overflow-x:auto}
.muted{color:#666;font-size:.9em}
"""


def _svg(fig) -> str:
    """The figure as inline SVG markup: no XML prolog or DOCTYPE (HTML5 parses <svg> inline), no metadata."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)


def _rc():
    import matplotlib

    # Text as <text> (searchable, small); fixed hash salt: the same session gives the same page, byte for byte.
    return matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "sgtui", "font.size": 9})


def _phase_names(S: list[RunSummary]) -> list[str]:
    seen = {name for s in S for st in s.steps for name in st.phases}
    return [p for p in PHASE_ORDER if p in seen] + sorted(seen - set(PHASE_ORDER))


def phase_chart_svg(c: Combined) -> str:
    """Stacked bars, one subplot per run: each step's phase durations (seconds), same y scale for every run.
    Steps outside the verdict's samples (step 1, unless counted; incomplete steps) are drawn faded."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    S = [s for s in c.summaries if s.steps]
    if not S:
        return ""
    names = _phase_names(S)
    colors = {p: PHASE_COLORS.get(p) or EXTRA_COLORS[i % len(EXTRA_COLORS)] for i, p in enumerate(names)}
    ncols = min(BAR_COLUMNS, len(S))
    nrows = -(-len(S) // ncols)
    with _rc():
        fig = Figure(figsize=(3.6 * ncols + 0.6, 2.9 * nrows + 0.5))
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
        for ax, s in zip(axes.flat, S):
            steps = [st.step for st in s.steps]
            bottom = [0.0] * len(steps)
            faded = [st.step not in s.steady_steps for st in s.steps]
            for p in names:
                heights = [st.phases.get(p, 0.0) for st in s.steps]
                if not any(heights):
                    continue
                bars = ax.bar(steps, heights, bottom=bottom, color=colors[p], width=0.7, label=p)
                for bar, fade in zip(bars, faded):
                    if fade:
                        bar.set_alpha(0.35)
                bottom = [b + h for b, h in zip(bottom, heights)]
            ax.set_title(s.label, fontsize=10)
            ax.set_xlabel("step")
            ax.set_xticks(steps)
            ax.grid(axis="y", alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("seconds")
        for ax in list(axes.flat)[len(S):]:
            ax.set_visible(False)
        fig.legend(handles=[Patch(color=colors[p], label=p) for p in names], loc="upper center",
                   ncol=len(names), frameon=False, bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return _svg(fig)


def _relative(series_t: list[float], run: RunState) -> list[float]:
    t0 = run.first_t if run.first_t is not None else (series_t[0] if series_t else 0.0)
    return [t - t0 for t in series_t]


def memory_chart_svg(c: Combined) -> str:
    """GPU memory over time, one line per run, time from the run's start (runs of one session run one after
    the other, runs of several sessions days apart: a shared origin lets them be compared). Solid: everything
    used on the run's GPUs; dashed: the engine's own processes (NVML per process), where they were measured.
    Empty when no run has a GPU sample (CPU sessions)."""
    from matplotlib.figure import Figure

    runs = [(label, run) for label, run, _g, _st in c.runs if len(run.device_mem.t) > 1]
    if not runs:
        return ""
    with _rc():
        fig = Figure(figsize=(10, 3.8))
        ax = fig.subplots()
        for i, (label, run) in enumerate(runs):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            ax.plot(_relative(run.device_mem.t, run), [v / 1024 for v in run.device_mem.v], color=color,
                    lw=1.4, label=f"{label}: run's GPUs")
            if any(v > 0 for v in run.engine_mem.v):
                ax.plot(_relative(run.engine_mem.t, run), [v / 1024 for v in run.engine_mem.v], color=color,
                        lw=1.0, ls="--", label=f"{label}: engine processes")
        ax.set_xlabel("seconds since the run's start")
        ax.set_ylabel("GPU memory used (GiB)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
        return _svg(fig)


def _key_table(S: list[RunSummary]) -> str:
    rows = [
        ("step total", lambda s: fmt.secs(s.phase_means.get("step_total"))),
        ("rollout", lambda s: fmt.secs(s.phase_means.get("rollout"))),
        ("offload", lambda s: fmt.secs(s.phase_means.get("offload"))),
        ("train", lambda s: fmt.secs(s.phase_means.get("train"))),
        ("reload", lambda s: fmt.secs(s.phase_means.get("reload"))),
        ("weight sync", lambda s: fmt.secs(s.phase_means.get("weight_sync"))),
        ("output tok/s", lambda s: fmt.num(s.phase_means.get("output_throughput"))),
        ("mean TTFT", lambda s: fmt.ms(s.phase_means.get("mean_ttft_ms"))),
        ("GPU memory peak", lambda s: fmt.mib(s.memory.peak_mib) if s.memory.measured else s.memory.reason),
        ("status", lambda s: s.status),
    ]
    head = "<tr><th>per step, steady state</th>" + "".join(f"<th>{escape(s.label)}</th>" for s in S) + "</tr>"
    body = "".join("<tr><td>" + escape(name) + "</td>" + "".join(f'<td class="num">{escape(get(s))}</td>' for s in S)
                   + "</tr>" for name, get in rows)
    return f"<table>{head}{body}</table>"


def _verdict_html(c: Combined) -> list[str]:
    v = c.verdict
    out = [f'<p class="headline">{escape(v.headline)}</p>']
    if v.confidence:
        out.append(f"<p>{escape(v.confidence)}</p>")
    if v.basis:
        out.append(f'<p class="muted">Per-step values: mean over the {escape(v.basis)}.</p>')
    if v.caveats:
        out.append("<p>Caveats:</p><ul>" + "".join(f"<li>{escape(x)}</li>" for x in v.caveats) + "</ul>")
    if v.findings:
        out.append("<p>Findings:</p><ul>" + "".join(f"<li>{escape(finding_line(f))}</li>" for f in v.findings)
                   + "</ul>")
    if v.breakdown and v.runner_up:
        out.append(f"<p>Per-phase difference, {escape(v.runner_up)} minus {escape(v.ranked[0])}: "
                   + escape(", ".join(f"{p} {d:+.2f}s" for p, d in v.breakdown)) + "</p>")
    for label, why in v.unranked.items():
        out.append(f"<p>Not ranked: {escape(label)} ({escape(why)})</p>")
    return out


def render_html(c: Combined) -> str:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:  # a trimmed install: say what to add rather than a traceback
        raise RuntimeError("--format html draws its charts with matplotlib: pip install matplotlib") from e
    from sgtui.export.text import render_text

    labels = ", ".join(s.label for s in c.summaries)
    phases, memory = phase_chart_svg(c), memory_chart_svg(c)
    reasons = sorted({s.memory.reason for s in c.summaries if not s.memory.measured and s.memory.reason})
    design = drift.design_lines(c.sources, [st for _l, _r, _g, st in c.runs])
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>sgtui: {escape(labels)}</title><style>{CSS}</style></head><body>",
        f"<h1>sgtui: {escape(labels)}</h1>",
        '<p class="muted">' + "<br>".join(escape(s) for s in c.sources) + "</p>",
        '<section id="verdict"><h2>Verdict</h2>', *_verdict_html(c),
        *(f'<p class="muted">{escape(line)}</p>' for line in design), "</section>",
        '<section id="phases"><h2>Phases per step</h2>',
        '<p class="muted">Seconds per phase, stacked; faded bars are steps outside the verdict\'s samples '
        "(step 1, shown apart unless counted, and incomplete steps).</p>",
        f'<div class="chart">{phases}</div>' if phases else "<p>No step finished a phase.</p>",
        "</section>", '<section id="memory"><h2>GPU memory over time</h2>',
        f'<div class="chart">{memory}</div>' if memory else
        f"<p>GPU memory not measured: {escape('; '.join(reasons) or 'no GPU samples')}.</p>",
        "</section>", '<section id="numbers"><h2>Key numbers</h2>', _key_table(c.summaries), "</section>",
        '<section id="report"><h2>Full report</h2><details><summary>text report (as <code>sgtui report</code> '
        f"prints it)</summary><pre>{escape(render_text(c))}</pre></details></section>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
