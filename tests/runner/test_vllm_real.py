"""The runner on the REAL vLLM CPU server (tiny model): runs of 2 steps, sleep1+lora and sleep2+none.

Both runs are in training mode: each step's rollouts are trained on by the persistent megatron-core
trainer (one torchrun per run, gloo, the trainer venv of setup/; TP=1 for sleep1, TP=2 for sleep2). In
sleep1 the exported PEFT adapter is hot-loaded into the running server, which serves the next rollout with
it; sleep2 never syncs (+none), the control for the train/rollout logprob mismatch: both runs score step 1
on the same initial adapter, and from step 2 on only the synced run's engine serves what the trainer has.

The runners are started once for the module (side by side, each with its own port) and every test
reads their event streams. The restart strategy runs end to end in tests/test_e2e_engines.py. Faults on the real server (bad model path, port taken, startup timeout,
server killed mid-rollout) are in tests/faults/test_engine_faults.py; HTTP sequences and timing attribution
against a fault-injection server in test_vllm_engine.py.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sgtui.config import RunConfig
from sgtui.events import EngineGauges, Log, Phase, Proc, Request, RunEnd, RunStart, Train, decode
from sgtui.findings import findings
from sgtui.runner.engines.vllm import ADAPTER_NAME, VllmEngine
from sgtui.state import load_state
from tests.engines import TINY, VLLM_PY, free_port, marked_processes, needs_vllm, port_is_free
from tests.trainer.conftest import TRAINER_PY, needs_trainer, trainer_groups

pytestmark = [pytest.mark.engine, needs_vllm]
REPO = Path(__file__).resolve().parents[2]
STEP_PHASES = ("rollout", "offload", "train", "reload", "weight_sync")
ROLLOUTS, OUT_TOKENS = 4, 16
LR = 1e-2  # large enough that one step moves the adapter well past the engine/trainer numerics


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("vllm-real")
    training = {"mode": "training", "trainer": "megatron", "group_size": 2, "learning_rate": LR} if TRAINER_PY else {}
    cfgs = {
        "sleep1": RunConfig(label="t-vllm-sleep1", backend="vllm", strategy="sleep1", sync="lora", **training),
        "sleep2": RunConfig(label="t-vllm-sleep2", backend="vllm", strategy="sleep2", sync="none", train_tp=2,
                            **training),
    }
    procs = {}
    for name, cfg in cfgs.items():
        cfg.python, cfg.model, cfg.port, cfg.workdir = str(VLLM_PY), str(TINY), free_port(), str(base / name)
        cfg.initial_adapter = str(TINY / "adapters" / "initial")
        cfg.num_steps, cfg.num_rollouts, cfg.concurrency = 2, ROLLOUTS, ROLLOUTS
        cfg.max_input_tokens, cfg.max_output_tokens, cfg.sim_train_seconds = 32, OUT_TOKENS, 0.1
        cfg.warmup_requests, cfg.scrape_interval, cfg.startup_timeout = 1, 0.2, 300.0
        procs[name] = subprocess.Popen([str(VLLM_PY), "-m", "sgtui.runner", "--config", cfg.to_json()],
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                       env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=base)
    out = {}
    t0 = time.monotonic()
    with ThreadPoolExecutor(len(procs)) as pool:  # read both streams at once: a full pipe would stall a runner
        texts = {name: pool.submit(p.stdout.read) for name, p in procs.items()}
    try:
        for name, p in procs.items():
            rc = p.wait(timeout=600)
            lines = texts[name].result().splitlines()
            out[name] = (cfgs[name], [decode(x, i) for i, x in enumerate(lines, 1)], rc)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, 9)
    print(f"\nvLLM CPU runners ({', '.join(cfgs)}; 2 steps each, side by side): {time.monotonic() - t0:.0f} s")
    return out


def of(events, cls, **kw):
    return [e for e in events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in kw.items())]


@pytest.mark.parametrize("name", ["sleep1", "sleep2"])
def test_run_ok_with_every_phase_of_every_step(runs, name):
    cfg, events, rc = runs[name]
    assert rc == 0 and of(events, RunEnd)[-1].status == "ok", [e for e in events if e.kind == "error"]
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd)
    # the engine's full command line is in run_start, as the engine then started it
    assert events[0].engine_argv == of(events, Proc, role="engine", action="start")[0].argv
    phases = [(e.step, e.name, e.edge) for e in of(events, Phase)]
    for step in (1, 2):
        for ph in STEP_PHASES:
            assert phases.count((step, ph, "start")) == 1 and phases.count((step, ph, "end")) == 1, (step, ph)
    for ph in ("startup", "warmup", "shutdown"):
        assert (0, ph, "end") in phases
    assert all(e.ok for e in of(events, Phase, edge="end"))
    assert of(events, Log, source="engine")  # the server's output came through as log events


@pytest.mark.parametrize("name", ["sleep1", "sleep2"])
def test_one_request_event_per_rollout(runs, name):
    cfg, events, _ = runs[name]
    for step in (1, 2):
        reqs = of(events, Request, step=step)
        assert len(reqs) == ROLLOUTS and not [r.error for r in reqs if r.error]
        assert all(r.output_tokens == OUT_TOKENS and r.ttft > 0 for r in reqs)


def test_lora_adapter_is_what_answers(runs):
    cfg, events, _ = runs["sleep1"]
    assert {r.served_model for r in of(events, Request)} == {"policy-lora"}
    syncs = [e.detail for e in of(events, Phase, name="weight_sync", edge="end")]
    assert syncs == ["initial adapter: load_lora_adapter policy-lora", "unload + load_lora_adapter policy-lora",
                     "unload + load_lora_adapter policy-lora"]
    assert (Path(cfg.workdir) / "adapters" / "step-2" / "adapter_model.safetensors").is_file()


@needs_trainer
def test_two_real_train_steps_one_trainer_launch_and_the_trained_adapter_serves(runs):
    cfg, events, _ = runs["sleep1"]
    trains = of(events, Train)
    assert [t.step for t in trains] == [1, 2] and not any(t.simulated for t in trains)
    assert all(math.isfinite(t.loss) and t.tokens > 0 and t.peak_mib for t in trains)
    for t in trains:
        assert (Path(t.adapter_path) / "adapter_model.safetensors").exists()
        # where the step's train time went: the ranks' own timings, the rest as `other`
        assert list(t.parts) == ["onload", "update", "export", "offload", "other"] and t.parts["update"] > 0
        assert abs(sum(t.parts.values()) - t.seconds) < 1e-6
    ends = {(e.step, e.name): e for e in of(events, Phase, edge="end")}
    # one launch for the run, before the engine starts; no launch inside the train phases
    assert ends[(0, "trainer_start")].ok and ends[(0, "trainer_start")].detail.startswith("torchrun TP=1 ready")
    assert ends[(0, "trainer_start")].t <= of(events, Phase, name="startup", edge="start")[0].t
    torchrun, ranks = trainer_groups(events)
    assert torchrun == ["start", "exit"] and len(ranks) == 1
    assert ends[(1, "train")].detail.startswith("megatron") and ends[(2, "train")].ok
    # vLLM asleep does not spin a core while the ranks train (SGLang's scheduler does: 1.00 cores); measured
    # only over a train phase of at least a second, which with the persistent trainer is mostly the first
    # second after /sleep answered (0.5-0.8 cores seen here, the server settling), so the bound is a core
    cpu = [g.gauges["cpu_in_train"] for g in of(events, EngineGauges) if "cpu_in_train" in g.gauges]
    assert all(0.0 <= c < 0.95 for c in cpu), cpu
    assert of(events, Log, source="trainer")  # the ranks' logs came through
    # step 2 rolls out on the adapter the trainer exported at step 1, hot-loaded by weight_sync 1
    assert ends[(1, "weight_sync")].ok and trains[0].adapter_path.endswith("step-1")
    assert {r.served_model for r in of(events, Request, step=2)} == {"policy-lora"}


@needs_trainer
def test_logprob_mismatch_near_zero_with_the_sync_and_large_without(runs):
    """fp32 on both sides: the engine's logprobs of its sampled tokens equal the trainer's up to kernel
    rounding while both hold the same adapter. Step 1 scores the initial adapter in both runs; at step 2 the
    synced run's engine serves the step-1 adapter the trainer now has, the +none run's still the initial one."""
    mm = {name: {t.step: t.mismatch for t in of(events, Train)} for name, (_c, events, _r) in runs.items()}
    for name in ("sleep1", "sleep2"):
        assert set(mm[name]) == {1, 2} and all(m["tokens"] == ROLLOUTS * OUT_TOKENS for m in mm[name].values())
    synced = [mm["sleep1"][1], mm["sleep1"][2], mm["sleep2"][1]]
    assert all(m["mean_abs"] < 1e-3 and m["max_abs"] < 1e-2 and abs(m["k3"]) < 1e-5 for m in synced), synced
    unsynced = mm["sleep2"][2]
    assert unsynced["mean_abs"] > max(1e-3, 20 * mm["sleep1"][2]["mean_abs"]), (unsynced, mm["sleep1"][2])
    assert unsynced["k3"] > 100 * max(abs(mm["sleep1"][2]["k3"]), 1e-9), (unsynced, mm["sleep1"][2])
    # the TP=2 trainer scores step 1 like the TP=1 one (same initial adapter, same numerics)
    assert of(runs["sleep2"][1], Phase, name="trainer_start", edge="end")[0].detail.startswith("torchrun TP=2")


def test_phase_details_say_what_happened(runs):
    _, events, _ = runs["sleep1"]
    detail = {(e.step, e.name): e.detail for e in of(events, Phase, edge="end")}
    assert detail[(0, "startup")] == "cold start; vllm 0.32.0"
    assert detail[(1, "offload")] == "sleep level 1 (cpu: dev-mode pause only, no memory freed)"
    assert detail[(1, "reload")] == "wake_up"
    _, events, _ = runs["sleep2"]  # level 2 discards the weights: the reload reads them from disk again
    detail = {(e.step, e.name): e.detail for e in of(events, Phase, edge="end")}
    assert detail[(2, "offload")] == "sleep level 2 (cpu: dev-mode pause only, no memory freed)"
    assert detail[(2, "reload")] == "wake_up weights + reload_weights from disk + wake_up kv_cache"
    assert detail[(0, "weight_sync")] == "initial adapter: load_lora_adapter policy-lora"
    assert detail[(1, "weight_sync")] == detail[(2, "weight_sync")] == "none"  # the control never syncs
    assert {r.served_model for r in of(events, Request)} == {"policy-lora"}


def test_engine_gauges_scraped_during_rollouts(runs):
    _, events, _ = runs["sleep1"]
    caps = [g for g in of(events, EngineGauges) if "kv_capacity_tokens" in g.gauges]  # read before each rollout
    gauges = [g for g in of(events, EngineGauges) if not {"cpu_in_train", "kv_capacity_tokens"} & set(g.gauges)]
    assert gauges and {g.step for g in gauges} <= {1, 2}
    for g in gauges:
        assert 0.0 <= g.gauges["kv_usage"] <= 1.0 and g.gauges["sleeping"] == 0.0 and "running" in g.gauges
    # the KV pool from vllm:cache_config_info, at start and after the wake-up: one value (on CPU sleep/wake_up
    # only pause), so the capacity finding has both readings and stays quiet
    assert [g.step for g in caps] == [1, 2] and len({g.gauges["kv_capacity_tokens"] for g in caps}) == 1
    assert all(g.gauges["kv_capacity_tokens"] % g.gauges["kv_blocks"] == 0 < g.gauges["kv_blocks"] for g in caps)
    s = load_state(events).summary("t-vllm-sleep1")
    assert [n for n, _ in s.kv_capacity_steps] == [1, 2]
    assert "kv_capacity_shrank" not in [f.key for f in findings([s])]


def test_nothing_left_running_and_ports_free(runs):
    # engine (+ torchrun and its rank groups: TP=1 for sleep1, TP=2 for sleep2)
    starts = {"sleep1": 3, "sleep2": 4} if TRAINER_PY else {"sleep1": 1, "sleep2": 1}
    for name, (cfg, events, _) in runs.items():
        procs = of(events, Proc)
        assert len(of(events, Proc, action="start")) == starts[name] == len(of(events, Proc, action="exit"))
        for p in procs:
            with pytest.raises(ProcessLookupError):
                os.killpg(p.pgid, 0)
        assert port_is_free(cfg.port)
    assert marked_processes({cfg.label for cfg, _, _ in runs.values()}) == []


async def test_synced_adapter_is_held_in_memory_not_reread_from_disk(tmp_path):
    """Why weight sync unloads and loads instead of loading in place: after an in-place load this vLLM re-reads
    the adapter's files whenever it activates it (each scheduler step; 2.7x the ITL on an H100), so a sync
    that used it would measure that. Deleting the files after our sync must not matter; the control at the
    end shows that after an in-place load it does (if a vLLM release fixes that, the control fails: then
    in-place loading can come back)."""
    cfg = RunConfig(label="t-vllm-adapter-files", backend="vllm", strategy="keep", sync="lora")
    cfg.python, cfg.model, cfg.port, cfg.workdir = str(VLLM_PY), str(TINY), free_port(), str(tmp_path)
    cfg.startup_timeout = 300.0
    copies = []
    for i in range(3):
        copies.append(tmp_path / f"adapter-{i}")
        shutil.copytree(TINY / "adapters" / "initial", copies[-1])
    eng = VllmEngine(cfg, lambda e: None, tmp_path)
    body = {"model": ADAPTER_NAME, "prompt": "the adapter answers", "max_tokens": 8, "temperature": 0.0}

    async def complete() -> tuple[int, str]:
        r = await eng.client.post("/v1/completions", json=body, timeout=120)
        return r.status_code, (r.json()["choices"][0]["text"] if r.status_code == 200 else r.text)

    try:
        await eng.start()
        await eng.sync_weights(str(copies[0]), 0)
        assert await eng.sync_weights(str(copies[1]), 1) == f"unload + load_lora_adapter {ADAPTER_NAME}"
        code, before = await complete()
        assert code == 200
        shutil.rmtree(copies[1])
        assert await complete() == (200, before)
        # control: the same after an in-place load of the third copy
        await eng.post("/v1/load_lora_adapter", json={"lora_name": ADAPTER_NAME, "lora_path": str(copies[2]),
                                                      "load_inplace": True})
        assert (await complete())[0] == 200
        shutil.rmtree(copies[2])
        code, text = await complete()
        assert code != 200, "this vLLM no longer re-reads in-place adapters: in-place sync may come back"
    finally:
        await eng.stop()
        await eng.aclose()
