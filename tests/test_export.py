import csv
import io

import orjson
import pytest

from sgtui.export import render
from sgtui.options import ReportOptions
from sgtui.state import load_state, run_summary
from tests.gen import generate


def state(**kw):
    st = load_state(generate(**kw))
    st.source = "sessions/x.jsonl"
    return st


def test_text_report_layout():
    text = render("txt", [state(labels=("vllm-sleep1", "vllm-restart", "sglang-release", "sglang-restart",
                                        "vllm-keep", "sglang-keep"), steps=2)])
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    for section in ("ROLLOUT", "TRANSITION OVERHEAD", "TRAINING", "END-TO-END", "GPU MEMORY", "VERDICT"):
        assert any(line.startswith(section) for line in lines), section
    assert any(line.startswith(("WINNER:", "no clear winner")) for line in lines)
    # 6 runs wrap into two blocks of columns
    assert sum(1 for line in lines if "vllm-sleep1" in line and "sglang-restart" in line) >= 1
    assert any(line.strip().startswith("vllm-keep") for line in lines)


def test_text_report_cpu_memory_not_zero():
    text = render("txt", [state(labels=("vllm-sleep1", "sglang-release"), steps=2, gpu=False)])
    assert "not measured: not measurable on CPU" in text


def test_json_keys_like_vllm_bench():
    doc = orjson.loads(render("json", [state(steps=2)]))
    run = doc["runs"][0]
    for key in ("request_throughput", "output_throughput", "mean_ttft_ms", "p99_ttft_ms", "mean_itl_ms",
                "median_tpot_ms", "p99_e2el_ms", "completed"):
        assert key in run
    assert doc["verdict"]["headline"]


def test_csv_rows_per_request_and_step():
    """Two tables, one per format: `csv` holds a row per run and step, `csv-requests` a row per request."""
    st = state(steps=3, requests=5)
    steps = list(csv.DictReader(io.StringIO(render("csv", [st]))))
    requests = list(csv.DictReader(io.StringIO(render("csv-requests", [st]))))
    n_req = sum(len(run.steps[n].requests) for run in st.runs.values() for n in run.rl_steps)
    assert len(requests) == n_req
    assert len(steps) == 3 * len(st.runs)


def test_trace_is_valid_with_expected_tracks():
    st = state(steps=2, requests=4)
    doc = orjson.loads(render("trace", [st]))
    ev = doc["traceEvents"]
    names = {e["args"]["name"] for e in ev if e.get("name") == "process_name"}
    assert {"vllm-sleep1", "sglang-release", "GPUs"} <= names
    phases = [e for e in ev if e.get("cat") == "phase"]
    assert {"startup", "rollout", "offload", "train", "reload", "weight_sync"} <= {e["name"] for e in phases}
    assert all(e["dur"] >= 0 for e in phases)
    slots = {e["tid"] for e in ev if e.get("cat") == "request"}
    assert slots == {100, 101, 102, 103}
    assert any(e["ph"] == "C" and e["name"] == "GPU 0 used MiB" for e in ev)


def test_markdown_table():
    md = render("md", [state(steps=2)])
    assert "| metric | `vllm-sleep1` | `sglang-release` |" in md and "**" in md


def test_two_sessions_side_by_side_get_unique_labels():
    a, b = state(steps=1), state(steps=1, seed=9)
    text = render("txt", [a, b])
    assert "vllm-sleep1#1" in text and "vllm-sleep1#2" in text and "session #2:" in text


def test_simulated_trainer_shows_no_loss():
    """The simulated trainer's Train events carry loss 0.0: reports must say "simulated", not a zero loss."""
    events = generate(labels=("vllm-sleep1", "sglang-release"), steps=2)
    for e in events:
        if type(e).__name__ == "Train" and e.run == "vllm-sleep1":
            e.loss, e.simulated = 0.0, True
    st = load_state(events)
    st.source = "sessions/x.jsonl"
    loss_line = next(line for line in render("txt", [st]).splitlines() if line.startswith("Last loss"))
    assert loss_line.split()[2:] == ["simulated", "0.5000"], loss_line
    steps = list(csv.DictReader(io.StringIO(render("csv", [st]))))
    assert {r["loss"] for r in steps if r["run"] == "vllm-sleep1"} == {""}


def test_engine_cpu_while_training_is_reported_per_run():
    """An engine that spins a core while the trainer runs (SGLang's idle scheduler on CPU) slows the trainer on a
    small box; the report puts the measured cores beside the train time, n/a where nothing was measured."""
    from sgtui.events import EngineGauges

    events = generate(labels=("vllm-sleep1", "sglang-release"), steps=2)
    events += [EngineGauges(t=e.t, run=e.run, step=e.step, gauges={"cpu_in_train": 1.0 if e.step == 1 else 0.9})
               for e in events if type(e).__name__ == "Train" and e.run == "sglang-release"]
    st = load_state(sorted(events, key=lambda e: e.t))
    st.source = "sessions/x.jsonl"
    row = next(line for line in render("txt", [st]).splitlines() if line.startswith("Engine CPU meanwhile"))
    assert row.split()[3:] == ["n/a", "0.95", "cores"], row
    runs = {r["label"]: r for r in orjson.loads(render("json", [st]))["runs"]}
    assert runs["sglang-release"]["engine_cpu_in_train_cores"] == 0.95
    assert runs["vllm-sleep1"]["engine_cpu_in_train_cores"] is None


def test_megatron_train_time_is_split_into_launch_and_update():
    """A one-launch-per-step trainer spends most of a short step starting up: the reports say how much, from
    the parts each Train event carries (mean over the steps); runs without parts (simulated, older sessions)
    show no split, and a session where no run has one gets no extra rows."""
    events = generate(labels=("vllm-sleep1", "sglang-release"), steps=2)
    assert "launch (torchrun)" not in render("txt", [load_state(events)])
    for e in events:
        if type(e).__name__ == "Train" and e.run == "sglang-release":
            e.parts = {"launch": 20.0 + e.step, "load": 1.0, "update": 3.0 * e.step, "export": 0.5}
    st = load_state(events)
    st.source = "sessions/x.jsonl"
    # mean over the steady state: step 2 (step 1 is shown apart), or both with step 1 counted
    assert st.summary("sglang-release").train_parts == {"launch": 22.0, "load": 1.0, "update": 6.0, "export": 0.5}
    assert run_summary(st.runs["sglang-release"], st.gpu, include_first_step=True).train_parts == {
        "launch": 21.5, "load": 1.0, "update": 4.5, "export": 0.5}
    both = ReportOptions(include_first_step=True)
    lines = render("txt", [st], both).splitlines()
    assert next(x for x in lines if x.startswith("  launch (torchrun)")).split()[2:] == ["—", "21.50s"]
    assert next(x for x in lines if x.startswith("  update")).split()[1:] == ["—", "4.50s"]
    runs = {r["label"]: r for r in orjson.loads(render("json", [st], both))["runs"]}
    assert runs["sglang-release"]["train_parts_s"]["launch"] == 21.5 and runs["vllm-sleep1"]["train_parts_s"] == {}
    assert "(launch (torchrun) 21.50s, load 1.00s, update 4.50s, export 0.50s)" in render("md", [st], both)


def test_persistent_trainer_parts_launch_and_logprob_mismatch_in_every_report():
    """A persistent trainer's step splits into onload, update, export, offload; its one launch is a phase of
    step 0; the logprob mismatch is shown per run, and the verdict calls out a run far above the other."""
    from sgtui import events as E

    events = generate(labels=("vllm-sleep1", "sglang-release"), steps=2)
    mm = {"vllm-sleep1": 0.002, "sglang-release": 0.05}
    for e in events:
        if isinstance(e, E.Train):
            e.parts = {"onload": 0.4, "update": 1.5 + e.step, "export": 0.1, "offload": 0.3, "other": 0.05}
            e.mismatch = {"mean_abs": mm[e.run] * e.step, "max_abs": 1.0, "k3": mm[e.run] / 10, "tokens": 100}
    first = next(i for i, e in enumerate(events) if isinstance(e, E.RunStart) and e.run == "vllm-sleep1")
    t = events[first].t
    events[first + 1:first + 1] = [E.Phase(t=t, run="vllm-sleep1", step=0, name="trainer_start", edge="start"),
                                   E.Phase(t=t + 12.5, run="vllm-sleep1", step=0, name="trainer_start", edge="end")]
    st = load_state(events)
    st.source = "sessions/x.jsonl"
    s = st.summary("sglang-release")
    assert s.mismatch == {"mean_abs": pytest.approx(0.075), "max_abs": 1.0, "k3": pytest.approx(0.005), "tokens": 200}
    assert [n for n, _ in s.mismatch_steps] == [1, 2] and st.summary("vllm-sleep1").trainer_start_s == 12.5
    lines = render("txt", [st]).splitlines()
    assert next(x for x in lines if x.startswith("Trainer launch (once)")).split()[3:] == ["12.50s", "—"]
    assert next(x for x in lines if x.startswith("  onload")).split()[1:] == ["0.40s", "0.40s"]
    assert next(x for x in lines if x.startswith("Logprob mismatch |d|")).split()[3:] == ["0.003", "0.075"]
    text = "\n".join(lines)
    assert "launch (torchrun)" not in text and "logprob mismatch: sglang-release mean |d| 0.075" in text
    runs = {r["label"]: r for r in orjson.loads(render("json", [st]))["runs"]}
    assert runs["sglang-release"]["logprob_mismatch"]["mean_abs"] == pytest.approx(0.075)
    assert runs["vllm-sleep1"]["steps"][1]["mismatch"]["mean_abs"] == 0.004
    md = render("md", [st])
    assert "onload 0.40s, update 3.50s, export 0.10s, offload 0.30s" in md and "0.075 / 1, 0.005" in md


def test_long_dashed_run_labels_are_never_cut():
    """Four runs named by strategy and sync method (the H100 full-sync session): column heads wrap at the
    dashes and the verdict names each best run whole; they read `vllm-s…p1-ipc` and `sglang-release-di`."""
    labels = ("vllm-sleep1-ipc", "sglang-release-ipc", "vllm-sleep1-disk", "sglang-release-disk")
    st = load_state(generate(labels=labels, steps=3))
    st.source = "sessions/x.jsonl"
    text = render("txt", [st])
    lines = text.splitlines()
    assert "…" not in text
    assert max(len(x) for x in lines) <= 80
    i = next(n for n, x in enumerate(lines) if x.startswith("Output tok/s ±95%"))
    heads = lines[i - 2:i]  # two head rows: "vllm-" over "sleep1-ipc", ...
    assert [a + b for a, b in zip(*(x.split() for x in heads))] == list(labels), heads
    table = lines[next(n for n, x in enumerate(lines) if x.startswith("metric")) + 1:]
    bests = {x[22:].split()[0] for x in table if x[:1].isalpha() and x[22:].split()}
    assert bests and bests <= set(labels), bests
