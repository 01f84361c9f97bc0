from pathlib import Path

import orjson

from sgtui import stats
from sgtui.export import combined, load_sessions
from sgtui.export.jsonout import render_json
from sgtui.session import read_session
from sgtui.state import load_state, run_summary
from sgtui.verdict import verdict
from tests.gen import generate

SESSIONS = Path(__file__).resolve().parents[1] / "sessions"
OLD_H100 = SESSIONS / ("20261123T215853Z-vllm-sleep1_vs_vllm-sleep2_vs_vllm-restart_vs_sglang-release_vs_"
                       "sglang-restart.jsonl")


def summaries(evs):
    st = load_state(evs)
    return [st.summary(label) for label in st.runs]


def test_identical_runs_no_clear_winner():
    a = generate(labels=("vllm-sleep1",), steps=4, noise=0.2, seed=3)
    # the same run again under another label, same timings
    b = [e for e in generate(labels=("vllm-sleep1",), steps=4, noise=0.2, seed=3)]
    for e in b:
        if hasattr(e, "run") and e.run:
            e.run = "sglang-release"
    v = verdict(summaries(a + b[1:]))
    assert v.winner is None and v.headline.startswith("no clear winner")
    assert "includes 0" in v.confidence


def test_clearly_faster_run_wins_with_breakdown():
    evs = generate(labels=("vllm-sleep1", "sglang-release"), steps=5, noise=0.05,
                   speed={"sglang-release": 3.0}, seed=1)
    v = verdict(summaries(evs))
    assert v.winner == "vllm-sleep1"
    assert v.headline.startswith("WINNER: vllm-sleep1") and "excludes 0" in v.confidence
    assert v.breakdown[0][0] in ("rollout", "offload") and v.breakdown[0][1] > 0
    row = next(r for r in v.rows if r.key == "output_throughput")
    assert row.best == "vllm-sleep1" and row.higher_is_better


def test_small_difference_inside_noise():
    evs = generate(labels=("vllm-sleep1", "sglang-release"), steps=4, noise=0.5,
                   speed={"sglang-release": 1.02}, seed=5)
    v = verdict(summaries(evs))
    step = v.rows[0]
    assert step.key == "step_total" and not all(step.significant.values())
    assert v.winner is None


def test_one_step_has_no_noise_estimate_and_failed_runs_are_not_ranked():
    evs = generate(labels=("vllm-sleep1", "sglang-release"), steps=1, speed={"sglang-release": 2.0})
    for e in evs:
        if getattr(e, "kind", "") == "run_end" and e.run == "sglang-release":
            e.status = "failed"
    v = verdict(summaries(evs))
    assert v.unranked == {"sglang-release": "failed"}
    assert v.winner is None


def test_welch_interval_against_textbook_values():
    c = stats.welch([1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0])
    # equal variances 1.667, n=4: se = sqrt(2*1.667/4) = 0.9129, df = 6, t = 2.447
    assert abs(c.diff - 1.0) < 1e-12
    assert abs((c.ci_high - c.diff) - 2.447 * 0.912870929) < 1e-3
    assert not c.significant
    assert stats.percentile([1, 2, 3, 4], 90) == 3.7


def test_train_difference_beside_a_busy_engine_gets_a_caveat():
    """Both runs train with the same trainer: a train-time gap next to an engine that spun a core meanwhile is
    explained in the verdict; engines that idled alike, or were not measured, get no note."""
    from dataclasses import replace

    a, b = summaries(generate(labels=("vllm-sleep1", "sglang-release"), steps=4, noise=0.05,
                              speed={"sglang-release": 1.5}, seed=2))
    a = replace(a, phase_means={**a.phase_means, "train": 5.0}, engine_cpu_in_train=0.1)
    b = replace(b, phase_means={**b.phase_means, "train": 7.6}, engine_cpu_in_train=1.0)
    v = verdict([a, b])
    assert v.ranked == ("vllm-sleep1", "sglang-release")
    assert v.caveats == ("train differs by +2.60s/step with the same trainer: sglang-release's engine used 1.00 CPU "
                         "cores meanwhile (vllm-sleep1's 0.10); where the trainer shares CPU cores with the engine, "
                         "that is the engine's cost",)
    assert verdict([a, replace(b, engine_cpu_in_train=0.3)]).caveats == ()
    assert verdict([replace(a, engine_cpu_in_train=None), b]).caveats == ()


def test_runs_recorded_with_inplace_lora_sync_get_a_caveat():
    """The bundled sessions before 2026-11-29 hot-loaded vLLM adapters in place (a vLLM bug slows those
    rollouts): the verdict names the runs; sessions recorded since get no note."""
    from dataclasses import replace

    a, b = summaries(generate(labels=("vllm-sleep1", "sglang-release"), steps=3, noise=0.05, seed=3))
    assert not a.inplace_lora_sync and verdict([a, b]).caveats == ()
    v = verdict([replace(a, inplace_lora_sync=True), b])
    assert len(v.caveats) == 1 and v.caveats[0].startswith("vllm-sleep1 hot-loaded adapters with vLLM's load_inplace")
    assert verdict([replace(a, inplace_lora_sync=True)]).caveats == v.caveats  # one run: still said


def test_inplace_sync_is_read_from_the_weight_sync_details_of_a_real_old_session():
    """The H100 session of 2026-11-23 synced in place (its phase details say so); the H200 one of 12-03 did not."""
    old = load_state(read_session(OLD_H100).events)
    flags = {label: run_summary(run, old.gpu).inplace_lora_sync for label, run in old.runs.items()}
    assert flags == {"vllm-sleep1": True, "vllm-sleep2": False, "vllm-restart": False, "sglang-release": False,
                     "sglang-restart": False}
    new = load_state(read_session(SESSIONS / "20261203T221836Z-vllm-sleep1_vs_sglang-release-training-h200-1b.jsonl").events)
    assert not run_summary(new.runs["vllm-sleep1"], new.gpu).inplace_lora_sync
    report = orjson.loads(render_json(combined(load_sessions([OLD_H100]))))
    assert {r["label"]: r["inplace_lora_sync"] for r in report["runs"]} == flags
    assert any("load_inplace" in c for c in report["verdict"]["caveats"])
