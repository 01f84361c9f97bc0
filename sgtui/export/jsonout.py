"""JSON export: combined + per run; request metrics keyed as in `vllm bench serve`'s result JSON."""

from __future__ import annotations

import dataclasses

import orjson

from sgtui.export import Combined


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
        "steps": [{**{k: v for k, v in dataclasses.asdict(st).items() if k != "metrics"},
                   "metrics": dataclasses.asdict(st.metrics)} for st in s.steps],
        "errors": [{"category": e.category, "message": e.message, "step": e.step, "advice": e.advice}
                   for e in s.errors],
    }


def render_json(c: Combined) -> str:
    v = c.verdict
    doc = {
        "sources": c.sources,
        "runs": [run_dict(s, run) for s, (_l, run, _g, _st) in zip(c.summaries, c.runs)],
        "verdict": {
            "winner": v.winner,
            "headline": v.headline,
            "confidence": v.confidence,
            "caveats": list(v.caveats),
            "ranked": list(v.ranked),
            "unranked": v.unranked,
            "breakdown_s_per_step": dict(v.breakdown),
            "metrics": [dataclasses.asdict(r) for r in v.rows],
        },
        "problems": c.problems,
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
