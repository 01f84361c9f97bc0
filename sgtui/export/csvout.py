"""CSV export: two tidy tables, one per file, so `pd.read_csv(path)` works as is (no skiprows, no row-type
filter, no column that is empty for half the rows).

Contract (pure functions, no IO):
    render_steps_csv(c) -> str      `--format csv`          one row per run and RL step   (base.csv)
    render_requests_csv(c) -> str   `--format csv-requests` one row per request           (base.requests.csv)
    render_csv = render_steps_csv   (the name the export registry has always called)

Why steps is the plain `csv`: it is the table a verdict is made of (phase durations, throughput, TTFT per
step, `steady` marks the verdict's samples), small enough for a spreadsheet; the requests table is the raw
material (every request of every step) and can be large, so it is asked for by name. `--export csv,csv-requests`
writes both next to the session.

Both tables start with the same key columns, so they join on (session, run, step) and several sessions
concatenate without losing where a row came from:
    session         the session file's stem (its name without .jsonl)
    session_id      the session header's id
    run             the run label as every report shows it (`label#N` when two sessions share a label)
    engine          the backend: vllm | sglang
    engine_version  the engine's version as the runner saw it
    strategy        how the engine gave the GPU to the trainer: sleep1, sleep2, release, restart, keep, ...
Times (`start`, `end`) are Unix seconds (`pd.to_datetime(df.start, unit="s")`); durations are seconds unless
the column name says `_ms`. Empty cells are missing values (NaN in pandas), never zero.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sgtui import goodput
from sgtui.export import Combined
from sgtui.state import RunState, SessionState

KEYS = ["session", "session_id", "run", "engine", "engine_version", "strategy"]

STEP_COLUMNS = KEYS + [
    "step", "rollout_s", "offload_s", "train_s", "reload_s", "weight_sync_s", "step_total_s",
    "output_throughput", "mean_ttft_ms", "requests", "errors", "loss",
    "steady",  # 1: the step is one of the verdict's samples (full, and not step 1 unless it is counted)
    # with --goodput (sgtui/goodput.py): good requests and them per second of rollout (vLLM's request_goodput);
    # empty without SLOs
    "good", "request_goodput",
]

REQUEST_COLUMNS = KEYS + [
    "step", "start", "end", "ttft_s", "latency_s", "itl_mean_s", "prompt_tokens", "output_tokens", "error",
    "slot", "model",
    "good",  # with --goodput: 1/0 = the request met every SLO; empty without SLOs
]


def _keys(label: str, run: RunState, st: SessionState) -> dict:
    info = run.info
    return {"session": Path(st.source).stem if st.source else "", "session_id": st.header.id if st.header else "",
            "run": label, "engine": info.backend if info else "", "engine_version": info.engine_version if info else "",
            "strategy": info.strategy if info else ""}


def _step_goodput(run: RunState, step: int, slos: goodput.Slos) -> dict:
    if not slos or step not in run.steps:
        return {}
    g = goodput.step_goodput(run.steps[step], slos)
    return {"good": g.good, "request_goodput": g.request_goodput}


def _writer(columns: list[str]) -> tuple[io.StringIO, csv.DictWriter]:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    return buf, w


def render_steps_csv(c: Combined) -> str:
    slos = c.options.goodput
    buf, w = _writer(STEP_COLUMNS)
    for (label, run, _g, st), s in zip(c.runs, c.summaries):
        keys = _keys(label, run, st)
        for step in s.steps:
            p = step.phases
            w.writerow({**keys, "step": step.step,
                        "rollout_s": p.get("rollout", ""), "offload_s": p.get("offload", ""),
                        "train_s": p.get("train", ""), "reload_s": p.get("reload", ""),
                        "weight_sync_s": p.get("weight_sync", ""),
                        "step_total_s": step.total_s if step.total_s is not None else "",
                        "output_throughput": step.metrics.output_throughput,
                        "mean_ttft_ms": step.metrics.mean_ttft_ms,
                        "requests": step.metrics.completed, "errors": step.metrics.errors,
                        "loss": step.loss if step.loss is not None else "",
                        "steady": int(step.step in s.steady_steps),
                        **_step_goodput(run, step.step, slos)})
    return buf.getvalue()


def render_requests_csv(c: Combined) -> str:
    slos = c.options.goodput
    buf, w = _writer(REQUEST_COLUMNS)
    for label, run, _g, st in c.runs:
        keys = _keys(label, run, st)
        for n in run.rl_steps:
            for r in run.steps[n].requests:
                w.writerow({**keys, "step": n, "start": f"{r.start:.6f}", "end": f"{r.t:.6f}",
                            "ttft_s": f"{r.ttft:.6f}", "latency_s": f"{r.latency:.6f}",
                            "itl_mean_s": f"{sum(r.itl) / len(r.itl):.6f}" if r.itl else "",
                            "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                            "error": r.error, "slot": r.slot, "model": r.model,
                            "good": int(goodput.is_good(r, slos)) if slos else ""})
    return buf.getvalue()


render_csv = render_steps_csv
