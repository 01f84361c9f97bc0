"""`--format vllm-json`: each run as the result file of `vllm bench serve --save-result --save-detailed`.

Contract:
    render_vllm_json(c) -> str       JSON Lines, one object per run in report order; one run's output is exactly
                                     a vLLM result file (json.load reads it), several runs append like vLLM's
                                     --append-result does
    run_result(label, run, slos, source) -> dict   one run's object (pure)
    per_second_peaks(requests) -> (max_output_tokens_per_s, max_concurrent_requests)

Keys, order and units are those vLLM 0.32.0 writes (vllm/benchmarks/serve.py: `main` writes date ..
max_concurrency, `benchmark` the rest, `calculate_metrics` computes them): times of the per-request lists in
seconds, aggregates `*_ms` in ms, throughputs per second. tests/fixtures/vllm_bench_result.json is such a file
from a real `vllm bench serve` run against the vLLM CPU server; tests/test_vllm_json.py holds the key set to it and
checks the shared values against sgtui's recording of the same prompts on the same server. Percentiles are vLLM's
defaults for what sgtui has no flag for: `--metric-percentiles 99` for `--percentile-metrics ttft,tpot,itl,e2el`
(vLLM's own default leaves e2el out; its parameter sweep asks for these four, and sgtui reports E2E everywhere).

Which requests: the whole run is one benchmark, every rollout request of every RL step (warm-up requests are never
recorded), in send order. `duration` (vLLM: the benchmark's wall time, first send to last answer) is the SUM OF
THE ROLLOUT PHASES' WALL TIMES: offload, train and weight sync between two rollouts serve nothing, so each step
adds its rollout only. The aggregates are `state.pooled_metrics` over those requests and that duration, i.e. the
numbers `RunSummary.metrics` gives every other report, with vLLM's definitions (TPOT leaves out one-token answers,
ITL pools every gap of every request, failed requests count only in `failed`).

`max_output_tokens_per_s` and `max_concurrent_requests` are vLLM 0.32.0's per-second buckets over successful
requests: bucket = whole seconds since the first send; each chunk (at ttft, then after each ITL gap) is one token
in its bucket; a request counts in every bucket from its send's to its end's, both included. Hence the fixture's
max_concurrent_requests of 8 at --max-concurrency 4 (all 8 requests ran within one second): it is a per-second
count, not an instantaneous concurrency. Computed sparsely (a counter and a sweep over interval edges, not vLLM's
dense arrays), so a run of hours, or an absurd latency in a damaged session, costs memory per request, not per
second; requests with non-finite times are left out of the buckets.

Where sgtui has something else to give (said here so nothing reads as vLLM's own measurement):
- start_times: Unix time of each send (vLLM: time.perf_counter(), an arbitrary origin); only differences mean
  something in either, and vLLM's readers (its timeline plot) subtract the first.
- queue_times: send minus the start of the request's rollout phase: sgtui hands a step's prompts over at once and
  `concurrency` slots take them, as vLLM's --request-rate inf queues them behind its --max-concurrency semaphore.
- generated_texts: empty strings (sessions keep no text). rtfx: 0.0 (no audio).
- date: the end of the run's last rollout, UTC, vLLM's "%Y%m%d-%H%M%S" (vLLM: local time when it finished), so
  a replay anywhere writes the same file.
- endpoint_type/backend: the vLLM request function that sends what sgtui sends: "openai" (/v1/completions) or
  "openai-chat"; the engine is `sgtui_engine`. label: the sgtui run label. request_rate "inf", burstiness 1.0.
- request_goodput: good requests / duration with `--goodput` (sgtui/goodput.py), null without, as vLLM.
NOT_APPLICABLE lists the keys of vLLM's file that sgtui leaves out: none. SGTUI_KEYS follow vLLM's keys.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Sequence

import orjson

from sgtui import __version__
from sgtui.events import Request
from sgtui.export import Combined
from sgtui.goodput import Slos, goodput
from sgtui.state import RunState, pooled_metrics, rollout_duration, step_request_stats

#: Version of this object's layout (bumped when a key changes meaning).
SCHEMA = 1
#: vLLM's `--metric-percentiles` default and the `--percentile-metrics` its sweep asks for.
PERCENTILES = (99,)
PERCENTILE_METRICS = ("ttft", "tpot", "itl", "e2el")
#: Keys of vLLM's result file that sgtui does not write (with why); none.
NOT_APPLICABLE: tuple[str, ...] = ()
#: Keys sgtui adds after vLLM's.
SGTUI_KEYS = ("sgtui_version", "schema", "sgtui_engine", "sgtui_engine_version", "sgtui_strategy", "sgtui_status",
              "sgtui_steps", "sgtui_goodput_slo_ms", "sgtui_source")


def _finite(r: Request) -> bool:
    return (math.isfinite(r.start) and math.isfinite(r.ttft) and math.isfinite(r.latency) and r.latency >= 0
            and all(math.isfinite(x) for x in r.itl))


def per_second_peaks(requests: Sequence[Request]) -> tuple[float, int]:
    """(max_output_tokens_per_s, max_concurrent_requests) as vLLM 0.32.0's `calculate_metrics` buckets them."""
    ok = [r for r in requests if not r.error and _finite(r)]
    if not ok:
        return 0.0, 0
    t0 = min(r.start for r in ok)
    buckets = math.ceil(max(r.start + r.latency for r in ok) - t0) + 1
    tokens: Counter[int] = Counter()
    edges: list[tuple[int, int]] = []
    for r in ok:
        t = r.start + r.ttft
        times = [t]
        for gap in r.itl:
            t += gap
            times.append(t)
        for tt in times:
            b = int(tt - t0)
            if 0 <= b < buckets:
                tokens[b] += 1
        first, last = int(r.start - t0), int((r.start + r.latency) - t0)
        edges += [(first, 1), (last + 1, -1)]  # seconds first..last inclusive
    edges.sort()  # at one second, the requests that ended before it (-1) go before those that start in it
    peak = cur = 0
    for _, d in edges:
        cur += d
        peak = max(peak, cur)
    return float(max(tokens.values(), default=0)), peak


def _date(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%d-%H%M%S") if math.isfinite(t) and t > 0 else ""


def run_result(label: str, run: RunState, slos: Slos = (), source: str = "") -> dict[str, Any]:
    """One run as vLLM's result dict (see the module docstring for every choice)."""
    steps = [run.steps[n] for n in run.rl_steps]
    reqs = [r for s in steps for r in sorted(s.requests, key=lambda r: r.start)]
    duration = sum(rollout_duration(s) for s in steps)
    m = pooled_metrics([step_request_stats(s) for s in steps], duration)
    info = run.info
    cfg = (info.config if info else None) or {}
    backend = "openai-chat" if cfg.get("endpoint") == "chat" else "openai"
    peak_tokens, peak_requests = per_second_peaks(reqs)
    queued: list[float] = []
    for s in steps:
        span = s.phases.get("rollout")
        origin = span.start if span is not None else min((r.start for r in s.requests), default=0.0)
        queued += [r.start - origin for r in sorted(s.requests, key=lambda r: r.start)]
    ends = [sp.end for s in steps if (sp := s.phases.get("rollout")) is not None and sp.end is not None]
    end = max(ends) if ends else max((r.t for r in reqs), default=run.last_t)
    out: dict[str, Any] = {
        "date": _date(end),
        "endpoint_type": backend,
        "backend": backend,
        "label": label,
        "model_id": cfg.get("served_model_name") or next((r.model for r in reqs if r.model), ""),
        "tokenizer_id": info.model if info else "",
        "num_prompts": len(reqs),
        "request_rate": "inf",
        "burstiness": 1.0,
        "max_concurrency": cfg.get("concurrency"),
        "duration": m.duration_s,
        "completed": m.completed,
        "failed": m.errors,
        "total_input_tokens": m.total_input_tokens,
        "total_output_tokens": m.total_output_tokens,
        "request_throughput": m.request_throughput,
        "request_goodput": goodput(reqs, m.duration_s, slos).request_goodput if slos else None,
        "output_throughput": m.output_throughput,
        "total_token_throughput": m.total_token_throughput,
        "input_lens": [r.prompt_tokens for r in reqs],
        "output_lens": [0 if r.error else r.output_tokens for r in reqs],
        "ttfts": [r.ttft for r in reqs],
        "itls": [list(r.itl) for r in reqs],
        "latencies": [r.latency for r in reqs],
        "start_times": [r.start for r in reqs],
        "queue_times": queued,
        "generated_texts": ["" for _ in reqs],
        "errors": [r.error for r in reqs],
        "max_output_tokens_per_s": peak_tokens,
        "max_concurrent_requests": peak_requests,
        "rtfx": 0.0,
    }
    for metric in PERCENTILE_METRICS:
        for stat in ("mean", "median", "std"):
            out[f"{stat}_{metric}_ms"] = getattr(m, f"{stat}_{metric}_ms")
        for p in PERCENTILES:
            out[f"p{p}_{metric}_ms"] = getattr(m, f"p{p}_{metric}_ms")
    out.update({
        "sgtui_version": __version__,
        "schema": SCHEMA,
        "sgtui_engine": info.backend if info else "",
        "sgtui_engine_version": info.engine_version if info else "",
        "sgtui_strategy": info.strategy if info else "",
        "sgtui_status": run.status,
        "sgtui_steps": len(steps),
        "sgtui_goodput_slo_ms": dict(slos) if slos else None,
        "sgtui_source": source,
    })
    return out


def render_vllm_json(c: Combined) -> str:
    return "".join(orjson.dumps(run_result(label, run, c.options.goodput, st.source)).decode() + "\n"
                   for label, run, _gpu, st in c.runs)
