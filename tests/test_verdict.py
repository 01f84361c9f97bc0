import re
from pathlib import Path

import orjson

from sgtui import events as E
from sgtui import stats
from sgtui.export import combined, load_sessions, render
from sgtui.export.jsonout import render_json
from sgtui.export.text import render_text
from sgtui.options import ReportOptions
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
    a = replace(a, phase_means={**a.phase_means, "train": 5.0}, engine_cpu_in_train=0.1,
                phase_samples={**a.phase_samples, "train": [4.9, 5.0, 5.1]})
    b = replace(b, phase_means={**b.phase_means, "train": 7.6}, engine_cpu_in_train=1.0,
                phase_samples={**b.phase_samples, "train": [7.5, 7.6, 7.7]})
    v = verdict([a, b])
    assert v.ranked == ("vllm-sleep1", "sglang-release")
    assert v.caveats == ("train differs by +2.60s/step with the same trainer: sglang-release's engine used 1.00 CPU "
                         "cores meanwhile (vllm-sleep1's 0.10); where the trainer shares CPU cores with the engine, "
                         "that is the engine's cost",)
    assert verdict([a, replace(b, engine_cpu_in_train=0.3)]).caveats == ()
    assert verdict([replace(a, engine_cpu_in_train=None), b]).caveats == ()
    # the slower run trains 30 ms faster (below the resolution): nothing to explain, whichever run is best there
    equal = verdict([a, replace(b, phase_means={**b.phase_means, "train": 4.97},
                                phase_samples={**b.phase_samples, "train": [4.87, 4.97, 5.07]})])
    assert next(r for r in equal.rows if r.key == "train").best == "sglang-release"
    assert not any(c.startswith("train differs") for c in equal.caveats)


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


def cancelled_after_a_cut_step(label: str, full_steps: int, speed: float) -> list:
    """One run of `full_steps` full steps, then a step whose rollout the user cancelled after one request:
    the events a cancelled run leaves (the runner ends the open rollout with ok=false, then run_end)."""
    evs = [e for e in generate(labels=(label,), steps=full_steps, speed={label: speed}, seed=3)
           if not (isinstance(e, E.RunEnd) or (isinstance(e, E.Phase) and e.name == "shutdown"))]
    t = max(e.t for e in evs)
    cut = full_steps + 1
    evs += [E.Phase(t=t, run=label, step=cut, name="rollout", edge="start"),
            E.Request(t=t + 0.3, run=label, step=cut, start=t, ttft=0.1, latency=0.3, itl=[0.01] * 20,
                      prompt_tokens=100, output_tokens=21),
            E.Phase(t=t + 0.4, run=label, step=cut, name="rollout", edge="end", ok=False, detail="cancelled"),
            E.RunEnd(t=t + 0.5, run=label, status="cancelled")]
    return evs


def test_a_cancelled_runs_cut_last_step_is_not_a_step_sample():
    # The cancelled run is ~5% slower per full step; its cut step (a 0.4 s rollout, nothing after) must not
    # make it the fastest.
    slow = cancelled_after_a_cut_step("vllm-sleep1", 3, speed=1.15)
    fast = generate(labels=("sglang-release",), steps=3, seed=4, t0=2_000_000.0)[1:]
    sums = summaries(slow + fast)
    a, b = sums
    assert len(a.steps) == 4 and not a.steps[-1].full
    assert len(a.completed_steps) == 3 and a.steady_steps == (2, 3)  # step 1 apart, the cut step 4 out
    assert len(a.phase_samples["step_total"]) == 2 == len(a.phase_samples["rollout"])
    assert 1.03 < stats.mean(a.phase_samples["step_total"]) / stats.mean(b.phase_samples["step_total"]) < 1.08
    v = verdict(sums)
    assert v.ranked[0] == "sglang-release"


def slow_first_step(evs: list, label: str, extra: float) -> list:
    """`label`'s step 1 takes `extra` seconds longer in train (a first LoRA batch, CUDA set-up): every later
    event of that run moves by `extra`."""
    out, shift = [], 0.0
    for e in evs:
        if getattr(e, "run", "") == label:
            if isinstance(e, E.Phase) and e.name == "train" and e.step == 1 and e.edge == "end":
                shift = extra
            e.t += shift
            if isinstance(e, E.Request):
                e.start += shift
        out.append(e)
    return out


def test_the_first_step_is_shown_apart_and_left_out_of_the_steady_state():
    # vllm-sleep1 is faster in every step but its first (one-off costs of 60 s): it must win the steady
    # state; counting the first step (--include-first-step) drowns its lead in that one step.
    evs = slow_first_step(generate(labels=("vllm-sleep1", "sglang-release"), steps=4, noise=0.05, seed=2,
                                   speed={"sglang-release": 1.5}), "vllm-sleep1", 60.0)
    st = load_state(evs)
    a, b = (run_summary(st.runs[k], st.gpu) for k in ("vllm-sleep1", "sglang-release"))
    assert a.steady_steps == (2, 3, 4) and not a.first_step_included and a.first_step.total_s > 60
    assert max(a.phase_samples["step_total"]) < 20
    v = verdict([a, b])
    assert v.winner == "vllm-sleep1" and v.basis.startswith("steady state: steps 2-4; step 1 shown apart")
    opts = ReportOptions(include_first_step=True)
    a1, b1 = (run_summary(st.runs[k], st.gpu, include_first_step=True) for k in ("vllm-sleep1", "sglang-release"))
    assert a1.steady_steps == (1, 2, 3, 4) and len(a1.phase_samples["step_total"]) == 4
    v1 = verdict([a1, b1], opts)
    assert v1.winner is None and "step 1 included" in v1.basis
    # every report says the same: its text report states the basis and shows step 1 apart
    text = render_text(combined([st]))
    assert "steady state: steps 2-4; step 1 shown apart" in text
    assert re.search(r"First step \(apart\)\s+6\d\.\d\ds", text)


def test_differences_below_the_resolution_are_equal_and_never_a_percentage_of_noise():
    # a `keep` strategy's offload is microseconds: +555,583 % of it is noise, and so is a 0.3 % step gain
    evs = generate(labels=("vllm-keep", "sglang-keep"), steps=4, noise=0.0, seed=8)
    for e in evs:
        if isinstance(e, E.Phase) and e.name == "offload" and e.edge == "end":
            e.t -= 1.5 - (1e-6 if e.run == "vllm-keep" else 5e-3)  # 1 us vs 5 ms
    v = verdict(summaries(evs))
    off = next(r for r in v.rows if r.key == "offload")
    other = next(k for k in off.diffs_abs)
    assert off.equal[other] and off.note == "equal (below resolution)" and other not in off.diffs_pct
    assert off.versus(other) == "equal (below resolution)" and not off.winner
    assert "%" not in off.versus(other)


def test_an_absurd_value_is_a_problem_with_its_line_never_a_crash(tmp_path):
    src = SESSIONS / "20261129T101440Z-vllm-sleep1_vs_sglang-release-training-cpu.jsonl"
    lines = src.read_bytes().splitlines()
    n = next(i for i, ln in enumerate(lines) if b'"kind":"request"' in ln)
    d = orjson.loads(lines[n])
    d["latency"] = 1e300
    lines[n] = orjson.dumps(d)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    for fmt in ("txt", "md", "json", "csv", "trace"):
        out = render(fmt, load_sessions([bad]))
        assert out
    (st,) = load_sessions([bad])
    assert st.problems == [f"{bad}:{n + 1}: request.latency: 1e+300 is not a plausible value (expected a finite "
                           "number up to 1e+15)"]
    text = render("txt", [st])
    assert "SESSION FILE PROBLEMS" in text and "request.latency: 1e+300 is not a plausible" in " ".join(text.split())


def test_json_keeps_the_failed_request_count_apart_from_the_run_errors():
    evs = generate(labels=("vllm-sleep1",), steps=3, requests=40, seed=1)  # ~5% of requests fail
    evs.insert(-1, E.Error(t=evs[-1].t, run="vllm-sleep1", step=2, category="ENGINE_CRASH", message="boom"))
    st = load_state(evs)
    doc = orjson.loads(render_json(combined([st])))["runs"][0]
    failed = sum(1 for e in evs if isinstance(e, E.Request) and e.error)
    assert failed and doc["errors"] == failed
    assert [e["category"] for e in doc["run_errors"]] == ["ENGINE_CRASH"]
