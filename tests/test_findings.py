"""The memory ledger (one definition of held, device memory apart, the sampling interval) and the named
findings of `sgtui.findings`, each on a crafted session with a control where it must not fire."""

from __future__ import annotations

import random
import statistics
import sys
from pathlib import Path

import orjson
import pytest

from sgtui import events as E
from sgtui import findings as F
from sgtui.config import RunConfig
from sgtui.export import render
from sgtui.orchestrator import REPO_ROOT, Orchestrator
from sgtui.session import read_session
from sgtui.state import load_state, run_summary

IDLE, TRAINER = 500.0, 8000.0


def crafted(label: str = "vllm-sleep1", *, steps: int = 4, before: float = 40000.0, held=None, caps=None,
            tpot_ms=None, sync: str = "load_lora_adapter policy-lora", gpu: bool = True, procs: bool = True,
            interval: float = 0.2, requests: int = 12, seed: int = 0, models=None) -> list[E.Event]:
    """One run of `steps` RL steps: per step a rollout (requests whose TPOT is about tpot_ms[step-1], an engine
    gauge with kv_capacity_tokens caps[step-1]), offload, train, reload, weight sync. GPU samples: the engine's
    process holds `before` MiB during the rollout and held[step-1] after offload, while the trainer's holds
    TRAINER MiB from the offload on; the device adds IDLE MiB of nobody's."""
    rnd = random.Random(seed)
    backend, strategy = label.split("-", 1)
    held = list(held) if held is not None else [784.0] * steps
    t = 0.0
    evs: list[E.Event] = [E.SessionHeader(t=t, gpu_interval_s=interval)]

    def sample(engine: float, trainer: float) -> None:
        if not gpu:
            return
        ps = [{"pid": 200, "device": 0, "used_mib": engine, "run": label, "role": "engine"},
              {"pid": 300, "device": 0, "used_mib": trainer, "run": label, "role": "trainer"}] if procs else []
        evs.append(E.GpuSample(t=t, devices=[{"index": 0, "name": "H100", "used_mib": IDLE + engine + trainer,
                                              "total_mib": 81559.0, "util": 10}], processes=ps))

    def phase(step: int, name: str, dur: float, detail: str = "") -> None:
        nonlocal t
        evs.append(E.Phase(t=t, run=label, step=step, name=name, edge="start"))
        t += dur
        evs.append(E.Phase(t=t, run=label, step=step, name=name, edge="end", detail=detail))

    sample(0.0, 0.0)
    t = 0.1
    evs.append(E.RunStart(t=t, run=label, backend=backend, strategy=strategy, gpus=[0] if gpu else [],
                          device="cuda" if gpu else "cpu", pid=100))
    phase(0, "startup", 1.0)
    for n in range(1, steps + 1):
        evs.append(E.Phase(t=t, run=label, step=n, name="rollout", edge="start"))
        start = t
        if caps is not None:
            evs.append(E.EngineGauges(t=t + 0.01, run=label, step=n,
                                      gauges={"kv_usage": 0.1, "kv_capacity_tokens": caps[n - 1]}))
            evs.append(E.EngineGauges(t=t + 0.02, run=label, step=n,  # a later reading of the step: not the first
                                      gauges={"kv_usage": 0.2, "kv_capacity_tokens": caps[n - 1] * 2}))
        tpot = (tpot_ms[n - 1] if tpot_ms is not None else 10.0) / 1000.0
        end = start
        for i in range(requests):
            itl = [tpot * rnd.uniform(0.8, 1.2) for _ in range(16)]
            lat = 0.05 + sum(itl)
            evs.append(E.Request(t=start + lat, run=label, step=n, start=start, ttft=0.05, latency=lat, itl=itl,
                                 prompt_tokens=32, output_tokens=17, slot=i, model=models[n - 1] if models else ""))
            end = max(end, start + lat)
        t = end - 0.001
        sample(before, 0.0)
        t = end + 0.001
        evs.append(E.Phase(t=t, run=label, step=n, name="rollout", edge="end"))
        phase(n, "offload", 0.5)
        sample(held[n - 1], TRAINER)
        phase(n, "train", 2.0)
        phase(n, "reload", 0.2)
        phase(n, "weight_sync", 0.1, sync)
    evs.append(E.RunEnd(t=t, run=label, status="ok"))
    return evs


def summary(evs, label: str | None = None):
    st = load_state(evs)
    label = label or next(k for k, r in st.runs.items() if r.info is not None)
    return run_summary(st.runs[label], st.gpu)


def tpots(evs, steps) -> list[float]:
    return [(r.latency - r.ttft) / (r.output_tokens - 1) * 1000 for r in evs
            if isinstance(r, E.Request) and r.step in steps]


# -- the ledger --------------------------------------------------------------------------------------------------
def test_held_is_the_engines_processes_and_the_device_is_a_column_of_its_own():
    held = [784.0, 790.0, 786.0, 784.0]
    mem = summary(crafted(held=held)).memory
    assert mem.source == "engine processes"
    assert [m.held_mib for m in mem.steps] == held
    assert [m.freed_mib for m in mem.steps] == [40000.0 - h for h in held]
    assert [m.engine_before_mib for m in mem.steps] == [40000.0] * 4
    # the device column counts the trainer that allocated right after offload, and says so by its name
    assert [m.device_held_mib for m in mem.steps] == [h + TRAINER for h in held]
    assert [m.device_freed_mib for m in mem.steps] == [40000.0 - h - TRAINER for h in held]
    assert mem.mean_held_mib == pytest.approx(statistics.mean(held))
    assert mem.device_mean_held_mib == pytest.approx(statistics.mean(held) + TRAINER)
    assert mem.engine_peak_mib == 40000.0 and mem.trainer_peak_mib == TRAINER
    assert [m.freed_share for m in mem.steps] == [pytest.approx((40000.0 - h) / 40000.0) for h in held]


def test_without_per_process_memory_held_is_not_a_device_number_in_disguise():
    mem = summary(crafted(procs=False, held=[784.0] * 4)).memory
    assert mem.measured and mem.source == "device"
    assert mem.mean_held_mib is None and all(m.held_mib is None and m.freed_mib is None for m in mem.steps)
    assert mem.device_mean_held_mib == pytest.approx(784.0 + TRAINER)


def test_peak_is_the_most_used_at_once_not_the_sum_of_per_device_maxima():
    """Two devices that peak at different times: the devices never held 60 GiB at once."""
    evs = [E.SessionHeader(t=0), E.RunStart(t=0, run="a", backend="vllm", gpus=[0, 1], device="cuda", pid=1)]
    for t, (u0, u1) in enumerate([(30000, 1000), (1000, 30000), (20000, 20000)], start=1):
        evs.append(E.GpuSample(t=t, devices=[{"index": 0, "used_mib": u0, "total_mib": 80000},
                                             {"index": 1, "used_mib": u1, "total_mib": 80000}]))
    evs += [E.Phase(t=0.5, run="a", step=1, name="train", edge="start"),
            E.Phase(t=3.5, run="a", step=1, name="train", edge="end")]
    mem = summary(evs, "a").memory
    assert mem.peak_mib == 40000.0
    assert mem.steps[0].train_peak_mib == 40000.0 and mem.steps[0].train_floor_mib == 31000.0


def test_the_sampling_interval_travels_in_the_session_header():
    st = load_state(crafted(interval=0.5))
    assert st.header.gpu_interval_s == 0.5 and st.summary("vllm-sleep1").memory.sample_interval_s == 0.5
    line = E.encode(E.SessionHeader(t=1.0, gpu_interval_s=0.25))
    assert E.decode(line).gpu_interval_s == 0.25
    old = orjson.loads(line)
    del old["gpu_interval_s"]  # a session written before the field: still readable, interval unknown
    evs = crafted()
    evs[0] = E.from_dict(old)
    assert summary(evs).memory.sample_interval_s is None


@pytest.mark.parametrize("sample_gpus", [True, False])
def test_the_orchestrator_writes_its_sampling_interval(tmp_path, monkeypatch, sample_gpus):
    monkeypatch.setenv("SGTUI_REPO", str(REPO_ROOT))
    fake = Path(__file__).parent / "fixtures" / "fake_runner.py"
    runs = [RunConfig(label="r0", backend="vllm", strategy="sleep1", workdir=str(tmp_path / "w"))]
    orch = Orchestrator(runs, tmp_path / "s.jsonl", gpu_interval=0.5, sample_gpus=sample_gpus,
                        runner_argv=lambda c: [sys.executable, str(fake), "ok", c.label])
    orch.run_sync()
    assert read_session(tmp_path / "s.jsonl").header.gpu_interval_s == (0.5 if sample_gpus else 0.0)


def test_kv_capacity_first_reading_per_step_and_the_first_sync():
    s = summary(crafted(caps=[16384.0, 16384.0, 12288.0, 12288.0]))
    assert s.kv_capacity_steps == ((1, 16384.0), (2, 16384.0), (3, 12288.0), (4, 12288.0))
    assert s.first_sync_step == 1
    assert summary(crafted(sync="none")).first_sync_step is None  # the +none control never syncs
    assert [n for n, _ in s.step_tpot_ms] == [1, 2, 3, 4] and all(len(v) == 12 for _, v in s.step_tpot_ms)


def test_reports_print_the_same_definitions_and_the_interval():
    st = load_state(crafted(interval=0.5, held=[784.0] * 4))
    st.source = "crafted.jsonl"
    txt, md = render("txt", [st]), render("md", [st])
    doc = orjson.loads(render("json", [st]))
    mem = st.summary("vllm-sleep1").memory
    for out in (txt, md):
        assert "GPU sampled every 0.5 s" in out and "above the idle floor" in out
    rows = {line[:24].strip(): line[24:].strip() for line in txt.splitlines()}
    assert rows["Held after offload"] == "784MiB"
    assert rows["device, above floor"] == f"{(784.0 + TRAINER) / 1024:.2f}GiB"
    assert rows["Trainer kept in rollout"] == "0MiB"  # the trainer had nothing on the GPU while offloaded
    assert doc["runs"][0]["memory"]["device_mean_held_mib"] == mem.device_mean_held_mib
    assert doc["runs"][0]["memory"]["sample_interval_s"] == 0.5 and "held" in doc["memory_definitions"]


# -- findings ----------------------------------------------------------------------------------------------------
def keys(evs) -> list[str]:
    return [f.key for f in F.findings([summary(evs)])]


def test_offload_that_freed_little_is_named_with_its_numbers():
    (f,) = F.findings([summary(crafted(held=[8000.0] * 4))])
    assert (f.key, f.run, f.severity, f.steps) == ("offload_freed_little", "vllm-sleep1", "warning", (1, 2, 3, 4))
    assert "80%" in f.text and "39.06GiB" in f.text and "7.81GiB still held" in f.text and "4 of 4" in f.text


def test_offload_freed_little_controls():
    assert keys(crafted(held=[784.0] * 4)) == []  # 98 %: a sleeping engine keeps its CUDA context
    assert keys(crafted("vllm-keep", held=[40000.0] * 4)) == []  # nothing offloaded by design
    assert keys(crafted(held=[8000.0] * 4, procs=False)) == []  # not measurable per process: no claim
    assert keys(crafted(held=[8000.0] * 4, gpu=False)) == []  # CPU
    # a small engine whose CUDA context is most of what stays: named, as info
    (f,) = F.findings([summary(crafted(before=3000.0, held=[700.0] * 4))])
    assert f.key == "offload_freed_little" and f.severity == "info"


def test_held_memory_growing_at_every_step():
    (f,) = F.findings([summary(crafted(held=[784.0, 900.0, 1100.0, 1400.0]))])
    assert f.key == "held_growing" and f.steps == (1, 2, 3, 4)
    assert "784MiB -> 1.37GiB" in f.text and "+616MiB" in f.text


@pytest.mark.parametrize("held", [
    [950.0, 970.0, 950.0, 970.0],  # the wobble of a real SGLang release session
    [784.0, 2000.0, 2000.0, 2000.0],  # a one-off jump that then stays: not a leak
    [784.0, 800.0, 815.0, 830.0],  # rises within the noise at every step
    [784.0, 784.0, 784.0, 1500.0],  # one rise: two steps, not three
])
def test_held_growing_controls(held):
    assert keys(crafted(held=held)) == []


def test_held_growing_over_the_last_three_steps():
    (f,) = F.findings([summary(crafted(held=[784.0, 784.0, 900.0, 1100.0]))])
    assert f.key == "held_growing" and f.steps == (2, 3, 4)


def test_kv_capacity_smaller_after_wake_up():
    (f,) = F.findings([summary(crafted(caps=[16384.0, 16384.0, 12288.0, 12288.0]))])
    assert f.key == "kv_capacity_shrank" and f.steps == (3, 4)
    assert "12,288 tokens at step 3, 16,384 at start" in f.text and "-25 %" in f.text


@pytest.mark.parametrize("caps", [None, [16384.0] * 4, [16384.0, 20000.0, 16384.0, 16384.0], [16384.0]])
def test_kv_capacity_controls(caps):
    assert keys(crafted(caps=caps, steps=len(caps) if caps else 4)) == []


def test_decode_slower_after_the_first_weight_sync():
    evs = crafted(tpot_ms=[10.0, 25.0, 25.0, 25.0], requests=8)
    (f,) = F.findings([summary(evs)])
    assert f.key == "decode_slower_after_sync" and f.steps == (2, 3, 4)
    before, after = statistics.mean(tpots(evs, {1})), statistics.mean(tpots(evs, {2, 3, 4}))
    assert f"{before:.1f}ms in step 1, {after:.1f}ms in steps 2-4" in f.text
    assert "load_inplace" not in f.text


def test_decode_slower_names_an_in_place_adapter_load():
    evs = crafted(tpot_ms=[10.0, 27.0, 27.0, 27.0], sync="load_lora_adapter policy-lora (in place)")
    (f,) = F.findings([summary(evs)])
    assert f.key == "decode_slower_after_sync" and "load_inplace" in f.text


def test_decode_slower_because_step_1_served_the_base_model_says_so():
    """Restart runs of older sessions rolled step 1 out on the base model: slower later, but not the sync's fault."""
    evs = crafted("vllm-restart", tpot_ms=[10.0, 20.0, 20.0, 20.0], models=["policy"] + ["policy-lora"] * 3,
                  sync="included in reload (server restarted with the new adapter)")
    (f,) = F.findings([summary(evs)])
    assert f.key == "decode_slower_after_sync" and f.severity == "info" and "step 1 served the base model" in f.text
    same = crafted("vllm-sleep1", tpot_ms=[10.0, 20.0, 20.0, 20.0], models=["policy-lora"] * 4)
    assert [f.severity for f in F.findings([summary(same)])] == ["warning"]


@pytest.mark.parametrize("tpot_ms,sync", [
    ([10.0, 10.0, 10.0, 10.0], "load_lora_adapter policy-lora"),  # same speed (per-request noise only)
    ([25.0, 10.0, 10.0, 10.0], "load_lora_adapter policy-lora"),  # step 1's one-off costs: slower first
    ([10.0, 25.0, 25.0, 25.0], "none"),  # never synced: whatever slowed it, not a sync
    ([10.0, 10.0, 10.0, 30.0], "load_lora_adapter policy-lora"),  # one slow step late: drift, not the sync
    ([10.0, 10.6, 10.6, 10.6], "load_lora_adapter policy-lora"),  # 6 %: below the 10 % that counts
])
def test_decode_slower_controls(tpot_ms, sync):
    assert keys(crafted(tpot_ms=tpot_ms, sync=sync, requests=40)) == []


def test_findings_of_several_runs_keep_run_order_and_labels():
    a = crafted("vllm-sleep1", held=[8000.0] * 4)
    b = crafted("sglang-release", caps=[16384.0, 9000.0, 9000.0, 9000.0])
    out = F.findings([summary(b), summary(a)])
    assert [(f.run, f.key) for f in out] == [("sglang-release", "kv_capacity_shrank"),
                                            ("vllm-sleep1", "offload_freed_little")]
    assert all(f.severity in F.SEVERITIES for f in out)

