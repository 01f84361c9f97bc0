"""CSV export: one file, a `row_type` column (`request` or `step`), so one download holds both
granularities and spreadsheet filters split them; columns not used by a row type stay empty."""

from __future__ import annotations

import csv
import io

from sgtui import goodput
from sgtui.export import Combined

COLUMNS = [
    "row_type", "run", "step", "start", "end", "ttft_s", "latency_s", "itl_mean_s", "prompt_tokens",
    "output_tokens", "error", "slot", "model", "rollout_s", "offload_s", "train_s", "reload_s",
    "weight_sync_s", "step_total_s", "output_throughput", "mean_ttft_ms", "requests", "errors", "loss",
    "steady",  # 1: the step is one of the verdict's samples (full, and not step 1 unless it is counted)
    # with --goodput (sgtui/goodput.py): request rows 1/0 = met every SLO; step rows: good requests and them
    # per second of rollout (vLLM's request_goodput); empty without SLOs
    "good", "request_goodput",
]


def _step_goodput(run, step: int, slos: goodput.Slos) -> dict:
    if not slos or step not in run.steps:
        return {}
    g = goodput.step_goodput(run.steps[step], slos)
    return {"good": g.good, "request_goodput": g.request_goodput}


def render_csv(c: Combined) -> str:
    slos = c.options.goodput
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for (label, run, _g, _st), s in zip(c.runs, c.summaries):
        for n in run.rl_steps:
            for r in run.steps[n].requests:
                w.writerow({"row_type": "request", "run": label, "step": n, "start": f"{r.start:.6f}",
                            "end": f"{r.t:.6f}", "ttft_s": f"{r.ttft:.6f}", "latency_s": f"{r.latency:.6f}",
                            "itl_mean_s": f"{sum(r.itl) / len(r.itl):.6f}" if r.itl else "",
                            "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                            "error": r.error, "slot": r.slot, "model": r.model,
                            "good": int(goodput.is_good(r, slos)) if slos else ""})
        for st in s.steps:
            p = st.phases
            w.writerow({"row_type": "step", "run": label, "step": st.step,
                        "rollout_s": p.get("rollout", ""), "offload_s": p.get("offload", ""),
                        "train_s": p.get("train", ""), "reload_s": p.get("reload", ""),
                        "weight_sync_s": p.get("weight_sync", ""),
                        "step_total_s": st.total_s if st.total_s is not None else "",
                        "output_throughput": st.metrics.output_throughput, "mean_ttft_ms": st.metrics.mean_ttft_ms,
                        "requests": st.metrics.completed, "errors": st.metrics.errors,
                        "loss": st.loss if st.loss is not None else "",
                        "steady": int(st.step in s.steady_steps),
                        **_step_goodput(run, st.step, slos)})
    return buf.getvalue()
