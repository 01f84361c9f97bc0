"""Runs that differ in more than the engine: every difference is a caveat, a device or model difference
leaves the runs side by side with no winner unless --allow-mismatch."""

from pathlib import Path

import orjson

from sgtui import compare
from sgtui import events as E
from sgtui.export import combined, load_sessions, render
from sgtui.options import ReportOptions
from sgtui.state import load_state
from sgtui.verdict import verdict
from tests.gen import generate

SESSIONS = Path(__file__).resolve().parents[1] / "sessions"
CPU = SESSIONS / "20261129T101440Z-vllm-sleep1_vs_sglang-release-training-cpu.jsonl"
H200 = SESSIONS / "20261203T221836Z-vllm-sleep1_vs_sglang-release-training-h200-1b.jsonl"


def test_a_cpu_and_an_h200_session_together_get_caveats_and_no_winner():
    states = load_sessions([CPU, H200])
    text = " ".join(render("txt", states).split())
    assert "no verdict: runs on different devices (CPU vs H200) and with different models" in text
    assert "--allow-mismatch to rank anyway" in text and "WINNER" not in text
    assert ("runs differ in device: vllm-sleep1#1, sglang-release#1 on CPU; vllm-sleep1#2, sglang-release#2 on "
            "NVIDIA H200 x1") in text
    assert "runs differ in sglang version: sglang-release#1 with sglang 0.5.23; sglang-release#2 with sglang 0.5.17"\
        in text
    v = combined(states).verdict
    assert v.winner is None and all(r.winner is None for r in v.rows)
    assert {d.aspect for d in v.differences} >= {"device", "model", "engine_version"}
    doc = orjson.loads(render("json", states))["verdict"]
    assert doc["winner"] is None and doc["caveats"] == list(v.caveats)
    assert any(d["aspect"] == "device" and d["blocking"] for d in doc["differences"])
    md = render("md", states)
    assert v.headline in md and all(c in md for c in v.caveats)
    # --allow-mismatch ranks them, and says so
    ranked = combined(states, ReportOptions(allow_mismatch=True)).verdict
    assert ranked.winner is not None and ranked.winner.endswith("#2")  # the H200 runs are faster
    assert any("(--allow-mismatch)" in c for c in ranked.caveats)


def test_a_session_of_one_machine_and_model_has_no_difference():
    assert combined(load_sessions([H200])).verdict.differences == ()


def profiles_of(evs):
    st = load_state(evs)
    return [st.summary(k).profile for k in st.runs]


def test_each_aspect_is_a_caveat_and_unknown_values_are_no_difference():
    evs = generate(labels=("vllm-sleep1", "sglang-release"), steps=2, seed=1)
    starts = [e for e in evs if isinstance(e, E.RunStart)]
    starts[0].config = {"model": "/m/a", "workload": "synthetic", "max_input_tokens": 256, "max_output_tokens": 512,
                        "concurrency": 64, "gpu_memory_utilization": 0.5, "extra_args": ["--enforce-eager"],
                        "placement": "shared", "trainer": "megatron", "trainer_launch": "persistent"}
    starts[1].config = {"model": "/m/a", "workload": "synthetic", "max_input_tokens": 256, "max_output_tokens": 128,
                        "concurrency": 64.0, "gpu_memory_utilization": 0.7, "extra_args": [],
                        "placement": "shared", "trainer": "megatron", "trainer_launch": "per-step"}
    diffs = compare.differences(profiles_of(evs))
    assert [d.aspect for d in diffs] == ["lengths", "memory_fraction", "graphs", "trainer_launch"]
    assert diffs[2].caveat() == ("runs differ in engine flags: vllm-sleep1 with eager (CUDA graphs off); "
                                 "sglang-release with CUDA graphs")
    assert not compare.blocking(diffs)
    v = verdict([load_state(evs).summary(k) for k in ("vllm-sleep1", "sglang-release")])
    assert [c for c in v.caveats if c.startswith("runs differ")] == [d.caveat() for d in diffs]
    # a run whose session does not record a value is no difference
    starts[1].config = {}
    assert compare.differences(profiles_of(evs)) == ()


def test_two_vllm_versions_are_a_caveat_but_vllm_against_sglang_is_the_point():
    evs = generate(labels=("vllm-sleep1", "vllm-restart", "sglang-release"), steps=2, seed=1)
    starts = [e for e in evs if isinstance(e, E.RunStart)]
    starts[0].engine_version, starts[1].engine_version, starts[2].engine_version = "0.26.0", "0.32.0", "0.5.17"
    (d,) = compare.differences(profiles_of(evs))
    assert d.caveat() == "runs differ in vllm version: vllm-sleep1 with vllm 0.26.0; vllm-restart with vllm 0.32.0"


def test_report_and_replay_flags_as_a_user_types_them():
    import subprocess
    import sys

    def sgtui(*args):
        return subprocess.run([sys.executable, "-m", "sgtui.cli", *args], capture_output=True, text=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[1])

    plain = sgtui("report", str(CPU), str(H200))
    assert plain.returncode == 0 and "no verdict: runs on different devices" in plain.stdout
    ranked = sgtui("report", str(CPU), str(H200), "--allow-mismatch", "--include-first-step")
    assert ranked.returncode == 0 and "(--allow-mismatch)" in ranked.stdout and "no verdict" not in ranked.stdout
    assert "step 1 included (--include-first-step)" in ranked.stdout
    replay = sgtui("replay", "--no-ui", str(H200), "--include-first-step")
    assert replay.returncode == 0 and "steady state: steps 1-4; step 1 included" in replay.stdout
