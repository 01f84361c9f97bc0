"""JSON export: combined + per run; request metrics keyed as in `vllm bench serve`'s result JSON."""

from __future__ import annotations

import dataclasses

import orjson

from sgtui import drift, goodput
from sgtui.export import Combined
from sgtui.state import MEMORY_DEFINITIONS


def run_dict(s, run) -> dict:
    info = run.info
    return {
        "label": s.label,
        "backend": s.backend,
        "strategy": s.strategy,
        "status": s.status,
        "engine_version": info.engine_version if info else "",
        "model": info.model if info else "",
        "device": info.device if info else "",
        "mode": info.mode if info else "",
        **dataclasses.asdict(s.metrics),
        "startup_s": s.startup_s,
        "phase_means_s": s.phase_means,
        "phase_samples": {k: list(v) for k, v in s.phase_samples.items()},
        "memory": dataclasses.asdict(s.memory),
        "engine_cpu_in_train_cores": s.engine_cpu_in_train,
        "inplace_lora_sync": s.inplace_lora_sync,
        "train_parts_s": s.train_parts,
        "trainer_start_s": s.trainer_start_s,
        "logprob_mismatch": s.mismatch,
        "weight_sync": {"sync": info.config.get("sync", "") if info and isinstance(info.config, dict) else "",
                        **s.sync},  # a full-weight sync's bytes, gbps, paused_s, ... (steady-state means)
        "steps": [{**dataclasses.asdict(st), "metrics": dataclasses.asdict(st.metrics)} for st in s.steps],
        # `errors` is the failed-request count (vLLM's name, from the metrics above); the run's own errors
        # (engine crash, timeout, ...) are a list of their own
        "run_errors": [{"category": e.category, "message": e.message, "step": e.step, "advice": e.advice}
                       for e in s.errors],
        "steady_steps": list(s.steady_steps),
        "first_step_s": s.first_step.total_s if s.first_step else None,
        # steps that ran beside foreign load (each step's own numbers: steps[].drift)
        "drift_flagged_steps": [{"step": n, "why": why} for n, why in drift.flagged_steps(s)],
    }


def goodput_fields(run, slos: goodput.Slos) -> dict:
    """vLLM's `request_goodput` (null without --goodput, as vLLM) and its count, over every rollout request."""
    if not slos:
        return {"request_goodput": None, "goodput": None}
    g = goodput.run_goodput(run, slos)
    return {"request_goodput": g.request_goodput,
            "goodput": {"slo_ms": dict(slos), "good": g.good, "completed": g.completed, "duration_s": g.duration_s}}


def render_json(c: Combined) -> str:
    v = c.verdict
    doc = {
        "sources": c.sources,
        "runs": [{**run_dict(s, run), **goodput_fields(run, c.options.goodput)}
                 for s, (_l, run, _g, _st) in zip(c.summaries, c.runs)],
        "goodput_slo_ms": dict(c.options.goodput) or None,
        "verdict": {
            "winner": v.winner,
            "headline": v.headline,
            "confidence": v.confidence,
            "caveats": list(v.caveats),
            "basis": v.basis,
            "differences": [{"aspect": d.aspect, "blocking": d.blocking, "caveat": d.caveat(),
                             "values": {value: list(labels) for value, labels in d.groups}} for d in v.differences],
            "findings": [dataclasses.asdict(f) for f in v.findings],
            "ranked": list(v.ranked),
            "unranked": v.unranked,
            "breakdown_s_per_step": dict(v.breakdown),
            "metrics": [dataclasses.asdict(r) for r in v.rows],
        },
        "problems": c.problems,
        "memory_definitions": MEMORY_DEFINITIONS,  # what runs[].memory's held/freed, device_*, peak are
        "designs": [{"source": st.source, "design": d, "inferred": inferred}
                    for st in dict.fromkeys(st for _l, _r, _g, st in c.runs)
                    for d, inferred in [drift.session_design(st)]],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
