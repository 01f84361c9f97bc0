"""vLLM engine: argv, every strategy's HTTP sequence, timing attribution, cancel, failure modes.

The HTTP behaviour is checked against `vllm_fault_server.py`, a FAULT-INJECTION server that speaks
vLLM's real endpoints (started by the engine itself, in its own process group, from the engine's
real argv). What the real vLLM CPU server shows is in test_vllm_real.py and tests/faults/test_engine_faults.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtui.events import EngineGauges, Error, Phase, Proc, Request, RunEnd, RunStart, decode
from sgtui.runner.engines.base import EngineError
from sgtui.runner.engines.vllm import ADAPTER_NAME, VllmEngine, cache_capacity, lora_rank_flag, sleep_gauges
from tests.runner.engine_cases import VLLM, FaultVllm
from tests.runner.fault_harness import (adapter_dir, assert_calls_in_their_phase, assert_gone,
                                        assert_outside_step_phases, complete, greedy_checks, phase_spans, run_steps,
                                        stopped_after)
from tests.runner.vllm_fault_server import ADAPTER_TEXT, BASE_TEXT

REPO = Path(__file__).resolve().parents[2]
make_cfg, make_engine = VLLM.make_cfg, VLLM.engine


# -- argv and environment -------------------------------------------------------------------------------
def test_argv_gpu_sleep_lora(tmp_path):
    cfg = make_cfg(tmp_path, device="cuda", tp=2, gpu_memory_utilization=0.85, lora_rank=12, dtype="bfloat16",
                   extra_args=["--max-num-seqs", "64"], max_model_len=4096, served_model_name="pol", seed=7)
    eng = VllmEngine(cfg, lambda e: None, tmp_path)
    argv = eng.server_argv()
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flag = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    assert flag["--model"] == cfg.model and flag["--served-model-name"] == "pol"
    assert flag["--host"] == "127.0.0.1" and flag["--port"] == str(cfg.port)
    assert flag["--tensor-parallel-size"] == "2" and flag["--gpu-memory-utilization"] == "0.85"
    assert flag["--max-model-len"] == "4096" and flag["--dtype"] == "bfloat16" and flag["--seed"] == "7"
    assert flag["--max-lora-rank"] == "16"  # 12 is not a rank vLLM accepts: the next one that holds it
    assert "--enable-sleep-mode" in argv and "--enable-lora" in argv
    assert "--enforce-eager" not in argv and "--lora-modules" not in argv
    assert argv[-2:] == ["--max-num-seqs", "64"]  # extra user flags last: they win
    env = eng.server_env()
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path.parent / "vllm-cache")  # beside the run dirs: warm across runs


def test_argv_cpu_never_asks_for_sleep_mode(tmp_path):
    """vLLM refuses --enable-sleep-mode on CPU ("Sleep mode is not supported on current platform")."""
    for strategy in ("sleep1", "sleep2"):
        eng = VllmEngine(make_cfg(tmp_path, strategy=strategy), lambda e: None, tmp_path)
        argv = eng.server_argv()
        assert "--enable-sleep-mode" not in argv and "--gpu-memory-utilization" not in argv
        assert "--enforce-eager" in argv and argv[argv.index("--dtype") + 1] == "float32"
        assert eng.server_env()["VLLM_CPU_KVCACHE_SPACE"].isdigit()  # GiB, integers only


def test_argv_restart_and_sync_variants(tmp_path):
    eng = VllmEngine(make_cfg(tmp_path, strategy="restart", sync="restart", device="cuda"), lambda e: None, tmp_path)
    argv = eng.server_argv("/adapters/step-3")
    assert argv[argv.index("--lora-modules") + 1] == f"{ADAPTER_NAME}=/adapters/step-3"
    assert "--enable-sleep-mode" not in argv  # restart needs no sleep mode
    eng = VllmEngine(make_cfg(tmp_path, sync="none", device="cuda"), lambda e: None, tmp_path)
    assert "--enable-lora" not in eng.server_argv()
    assert [lora_rank_flag(r) for r in (1, 4, 8, 9, 64, 300, 1000)] == [1, 8, 8, 16, 64, 320, 512]


def test_metrics_parsing_on_vllm_text():
    """Labelled sleep state and summed gauges, on text in vLLM 0.32's /metrics format."""
    text = "\n".join([
        "# HELP vllm:engine_sleep_state Engine sleep state; awake = 0 means engine is sleeping; ...",
        "# TYPE vllm:engine_sleep_state gauge",
        'vllm:engine_sleep_state{engine="0",model_name="policy",sleep_state="awake"} 0.0',
        'vllm:engine_sleep_state{engine="0",model_name="policy",sleep_state="weights_offloaded"} 0.0',
        'vllm:engine_sleep_state{engine="0",model_name="policy",sleep_state="discard_all"} 1.0',
    ])
    assert sleep_gauges(text) == {"sleeping": 1.0, "sleep_level": 2.0}
    awake = text.replace('awake"} 0.0', 'awake"} 1.0').replace('discard_all"} 1.0', 'discard_all"} 0.0')
    assert sleep_gauges(awake) == {"sleeping": 0.0, "sleep_level": 0.0}
    paused = text.replace('discard_all"} 1.0', 'discard_all"} 0.0')  # level 0: scheduling paused only
    assert sleep_gauges(paused) == {"sleeping": 1.0, "sleep_level": 0.0}
    assert sleep_gauges("vllm:num_requests_running 3.0\n") == {}  # older vLLM without the gauge


# -- strategies: HTTP sequences ---------------------------------------------------------------------------
async def test_sleep1_cpu_sequence(tmp_path):
    eng, events = make_engine(tmp_path)
    async with stopped_after(eng):
        assert await eng.start() == "cold start"
        assert await eng.version() == "0.32.0"
        detail = await eng.offload()
        assert detail == "sleep level 1 (cpu: dev-mode pause only, no memory freed)"
        assert (await eng.client.get("/is_sleeping")).json() == {"is_sleeping": True}
        assert await eng.reload(None) == "wake_up"
        assert eng.control_calls() == [("/sleep", {"level": ["1"]}), ("/wake_up", {})]
        sleeping = [c["t0"] for c in eng.calls() if c["path"] == "/is_sleeping"]
        assert len(sleeping) == 3  # checked after sleep and after wake_up (plus the test's own look)
    assert [p.action for p in events if isinstance(p, Proc)] == ["start", "exit"]
    assert_gone(events, eng.cfg.port)


async def test_sleep1_gpu_has_no_cpu_note(tmp_path):
    eng, _ = make_engine(tmp_path, device="cuda")
    async with stopped_after(eng):
        await eng.start()
        assert "--enable-sleep-mode" in eng.last_argv
        assert await eng.offload() == "sleep level 1"
        await eng.reload(None)


async def test_split_placement_pins_the_server_to_the_engine_gpus(tmp_path, monkeypatch):
    """The runner is pinned to the trainer's GPUs (orchestrator); the server it spawns must see the engine's."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # what the orchestrator gives a split-placement runner
    eng, _ = make_engine(tmp_path, device="cuda", gpus=[1, 2], train_gpus=[3], placement="split", strategy="keep")
    async with stopped_after(eng):
        await eng.start()
        environ = dict(kv.split(b"=", 1) for kv in
                       Path(f"/proc/{eng.child.pid}/environ").read_bytes().split(b"\0") if b"=" in kv)
        assert environ[b"CUDA_VISIBLE_DEVICES"] == b"1,2" and environ[b"CUDA_DEVICE_ORDER"] == b"PCI_BUS_ID"


async def test_sleep2_reloads_discarded_weights(tmp_path):
    """Level 2 discards the weights: wake weights, reload_weights from disk, then wake the KV cache
    (the order vLLM's own snapshot server uses: vllm/snapshot/server.py _restore_reloadable_state)."""
    eng, _ = make_engine(tmp_path, strategy="sleep2", sync="none")
    async with stopped_after(eng):
        await eng.start()
        assert await eng.offload() == "sleep level 2 (cpu: dev-mode pause only, no memory freed)"
        detail = await eng.reload(None)
        assert detail == "wake_up weights + reload_weights from disk + wake_up kv_cache"
        assert eng.control_calls() == [("/sleep", {"level": ["2"]}), ("/wake_up", {"tags": ["weights"]}),
                                       ("/collective_rpc", {"method": "reload_weights"}),
                                       ("/wake_up", {"tags": ["kv_cache"]})]
        code, doc = await complete(eng, "policy")
        assert code == 200 and doc["choices"][0]["text"] == (BASE_TEXT * 2)[:8]  # the model is back


async def test_fault_server_control_sleep2_without_reload_serves_garbage(tmp_path):
    """Control for the test above: waking from level 2 without reload_weights leaves no usable model."""
    eng, _ = make_engine(tmp_path, strategy="sleep2", sync="none")
    async with stopped_after(eng):
        await eng.start()
        await eng.offload()
        await eng.post("/wake_up")
        code, doc = await complete(eng, "policy")
        assert code == 200 and doc["choices"][0]["text"] != (BASE_TEXT * 2)[:8]


async def test_keep_makes_no_control_call(tmp_path):
    eng, _ = make_engine(tmp_path, strategy="keep", sync="none")
    async with stopped_after(eng):
        await eng.start()
        assert await eng.offload() == "keep: engine stays resident"
        assert await eng.reload(None) == "keep: nothing to reload"
        assert eng.control_calls() == []
        assert eng.child.alive()


async def test_lora_sync_loads_then_unloads_and_loads(tmp_path):
    """Never `load_inplace`: vLLM keeps that flag on the stored request and re-reads the adapter from disk
    whenever it activates it (the module docstring of sgtui/runner/engines/vllm.py has the measurement)."""
    eng, _ = make_engine(tmp_path)
    a0, a1 = adapter_dir(tmp_path, "a0"), adapter_dir(tmp_path, "a1")
    async with stopped_after(eng):
        await eng.start()
        assert eng.request_model() == "policy"
        assert await eng.sync_weights(a0, 0) == f"load_lora_adapter {ADAPTER_NAME}"
        assert eng.request_model() == ADAPTER_NAME
        assert await eng.sync_weights(a1, 1) == f"unload + load_lora_adapter {ADAPTER_NAME}"
        assert eng.control_calls() == [
            ("/v1/load_lora_adapter", {"lora_name": ADAPTER_NAME, "lora_path": a0}),
            ("/v1/unload_lora_adapter", {"lora_name": ADAPTER_NAME}),
            ("/v1/load_lora_adapter", {"lora_name": ADAPTER_NAME, "lora_path": a1})]
        code, doc = await complete(eng, ADAPTER_NAME)
        assert code == 200 and doc["model"] == ADAPTER_NAME and doc["choices"][0]["text"] == ADAPTER_TEXT[:8]
        with pytest.raises(EngineError) as ei:  # a bad path: vLLM answers 404 with its message
            await eng.sync_weights(str(tmp_path / "missing"), 2)
        assert "404" in ei.value.message and "No adapter found" in ei.value.message
        assert not eng.lora_loaded  # unloaded, the load failed: nothing to unload next time


async def test_fault_server_control_second_load_of_a_name_is_refused(tmp_path):
    """Control: vLLM refuses to load a loaded name again (without `load_inplace`), which is why sync unloads
    first."""
    eng, _ = make_engine(tmp_path)
    a = adapter_dir(tmp_path)
    async with stopped_after(eng):
        await eng.start()
        await eng.sync_weights(a, 0)
        with pytest.raises(EngineError) as ei:
            await eng.post("/v1/load_lora_adapter", json={"lora_name": ADAPTER_NAME, "lora_path": a})
        assert "400" in ei.value.message and "already been loaded" in ei.value.message


async def test_restart_strategy_with_lora_sync_loads_after_restart(tmp_path):
    """A restarted server has no adapter: the next sync is a plain load, with nothing to unload."""
    eng, _ = make_engine(tmp_path, strategy="restart", sync="lora")
    a0, a1 = adapter_dir(tmp_path, "a0"), adapter_dir(tmp_path, "a1")
    async with stopped_after(eng):
        await eng.start()
        await eng.sync_weights(a0, 0)
        await eng.offload()
        assert await eng.reload(a1) == "warm restart (same machine, caches warm)"
        assert eng.request_model() == "policy" and "--lora-modules" not in eng.last_argv
        assert await eng.sync_weights(a1, 1) == f"load_lora_adapter {ADAPTER_NAME}"


async def test_scrape_gauges_and_prefix_rate_over_the_interval(tmp_path):
    eng, _ = make_engine(tmp_path, {"metrics": {"running": 3, "waiting": 1, "kv": 0.25, "num_gpu_blocks": 512,
                                                "queries_per_scrape": 100, "hits_per_scrape": 40}})
    async with stopped_after(eng):
        await eng.start()
        first = await eng.scrape()
        assert first == {"kv_usage": 0.25, "running": 3.0, "waiting": 1.0, "sleeping": 0.0, "sleep_level": 0.0}
        assert await eng.capacity() == {"kv_blocks": 512.0, "kv_capacity_tokens": 512.0 * 16}
        second = await eng.scrape()  # 40 more hits of 100 more queries since the last scrape
        assert second["prefix_hit_rate"] == pytest.approx(0.4)


#: The gauge as vLLM 0.32's CPU server exposed it for the tiny model (`/metrics`, 2026-12-05).
REAL_CACHE_INFO = (
    'vllm:cache_config_info{_block_size_resolved="True",block_size="128",cache_dtype="auto",cache_hit_ali'
    'gnment_tokens="None",effective_attention_block_size="128",enable_mamba_shared_prefix_checkpoint="Fal'
    'se",enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.92",hash_block_size="None",is_'
    'attention_free="False",kv_cache_dtype_skip_layers="[]",kv_cache_layout="None",kv_cache_max_concurren'
    'cy="4096.0",kv_cache_memory_bytes="1073741824",kv_cache_size_tokens="458752",kv_offloading_backend="'
    'native",kv_offloading_size="None",kv_sharing_fast_prefill="False",mamba_block_size="None",mamba_cach'
    'e_dtype="auto",mamba_cache_mode="none",mamba_page_size_padded="None",mamba_ssm_cache_dtype="float32"'
    ',num_cpu_blocks="None",num_gpu_blocks="4096",num_gpu_blocks_override="None",prefix_cache_retention_i'
    'nterval="0",prefix_caching_hash_algo="sha256",prefix_match_unit="None",replayssm_buffer_len="16",ski'
    'p_page_size_padded="None",sliding_window="None",swa_bounded_replay="True",use_kda_recoverssm="False"'
    ',use_replayssm="False",user_specified_block_size="False"} 1.0'
)


def test_cache_capacity_from_the_real_cache_config_info_labels():
    assert cache_capacity(REAL_CACHE_INFO) == {"kv_blocks": 4096.0, "kv_capacity_tokens": 4096.0 * 128}
    other = REAL_CACHE_INFO.replace('engine="0"', 'engine="1"').replace('num_gpu_blocks="4096"', 'num_gpu_blocks="100"')
    assert cache_capacity(REAL_CACHE_INFO + "\n" + other)["kv_blocks"] == 4196.0  # data parallel: summed
    unprofiled = REAL_CACHE_INFO.replace('num_gpu_blocks="4096"', 'num_gpu_blocks="None"')
    assert cache_capacity(unprofiled) == {} and cache_capacity("vllm:num_requests_running 0.0") == {}


# -- failures -------------------------------------------------------------------------------------------
async def test_still_asleep_after_wake_up_is_an_error(tmp_path):
    eng, _ = make_engine(tmp_path, {"stays_asleep": True})
    async with stopped_after(eng):
        await eng.start()
        await eng.offload()
        with pytest.raises(EngineError) as ei:
            await eng.reload(None)
        assert "/is_sleeping is True after wake_up" in ei.value.message


async def test_exit_at_startup_is_categorised_from_the_log(tmp_path):
    log = ["OSError: Can't load the configuration of '/models/missing'. If you were trying to load it from "
           "'https://huggingface.co/models', make sure you don't have a local directory with the same name."]
    eng, events = make_engine(tmp_path, {"startup_log": log, "exit_at_startup": 1})
    async with stopped_after(eng):
        with pytest.raises(EngineError) as ei:
            await eng.start()
        assert ei.value.category == "MODEL_PATH" and "exit code 1" in ei.value.message
        assert any("Can't load the configuration" in line for line in ei.value.log_tail)
    assert_gone(events, eng.cfg.port)


# -- the real step loop ------------------------------------------------------------------------------------
async def test_runner_attributes_each_call_to_its_phase(tmp_path):
    """The real step loop with delays injected per endpoint: each delay lands in its own phase only."""
    delays = {"/sleep": 0.3, "/wake_up": 0.2, "/v1/load_lora_adapter": 0.25}
    cfg = make_cfg(tmp_path, initial_adapter=adapter_dir(tmp_path, "initial"), scrape_interval=0.05,
                   sim_train_seconds=1.0)  # long enough for the engine's CPU over the train phase to be reported
    eng, events = await run_steps(FaultVllm, cfg, {"delays": delays, "token_delay": 0.02})
    phases = phase_spans(events)
    assert_calls_in_their_phase(eng.calls(), phases,
                                {"/sleep": "offload", "/wake_up": "reload", "/v1/load_lora_adapter": "weight_sync"})
    dur = {k: b - a for k, (a, b) in phases.items()}
    for step in (1, 2):
        assert dur[(step, "offload")] >= 0.3 and dur[(step, "reload")] >= 0.2
        assert 0.25 <= dur[(step, "weight_sync")] < 0.25 + 0.2  # no wake_up in weight sync
        assert dur[(step, "reload")] < 0.2 + 0.25  # no adapter load in reload
        assert dur[(step, "offload")] < 0.3 + 0.2
    # the verification requests run outside every timed phase of the steps
    checks = [c for c in greedy_checks(eng.calls()) if c["t0"] > phases[(0, "warmup")][1]]
    assert len(checks) == 6  # adapter and base, after the initial load and after each step's sync
    assert_outside_step_phases(checks, phases)
    reqs = [e for e in events if isinstance(e, Request)]
    assert len(reqs) == 2 * cfg.num_rollouts and all(not r.error for r in reqs)
    assert {r.served_model for r in reqs} == {ADAPTER_NAME} and {r.model for r in reqs} == {ADAPTER_NAME}
    gauges = [e for e in events if isinstance(e, EngineGauges)]
    scraped = [e for e in gauges if "cpu_in_train" not in e.gauges]
    assert scraped and all(e.step in (1, 2) and e.gauges.get("sleeping") == 0.0 for e in scraped)
    # the engine's CPU while the trainer ran: one gauge per step (a sleeping stand-in server uses next to none)
    cpu = [e for e in gauges if "cpu_in_train" in e.gauges]
    assert [e.step for e in cpu] == [1, 2] and all(0.0 <= e.gauges["cpu_in_train"] < 0.5 for e in cpu)
    details = {(k, e.edge): e.detail for e in events if isinstance(e, Phase) for k in [(e.step, e.name)]}
    assert details[((0, "startup"), "end")] == "cold start; vllm 0.32.0"
    assert details[((0, "weight_sync"), "end")] == f"initial adapter: load_lora_adapter {ADAPTER_NAME}"
    assert details[((2, "weight_sync"), "end")] == f"unload + load_lora_adapter {ADAPTER_NAME}"
    assert details[((1, "train"), "end")] == \
        f"simulated; engine used {cpu[0].gauges['cpu_in_train']:.2f} CPU cores meanwhile"
    assert (Path(cfg.workdir) / "adapters" / "step-2" / "adapter_config.json").is_file()


DRIVER = """
import sys
from sgtui.runner import __main__ as m
from tests.runner.engine_cases import FaultVllm

def make(cfg, emit, workdir):
    e = FaultVllm(cfg, emit, workdir)
    e.plan = {}
    return e

m.make_engine = make
sys.exit(m.main(sys.argv[1:]))
"""


def test_sigterm_during_train_cancels_the_phase_and_stops_the_engine(tmp_path):
    """SIGTERM to the runner process mid-train: the phase ends not ok, the engine group is stopped,
    `run_end cancelled` is the last line, and the process exits at once (not after the 60 s of training)."""
    cfg = make_cfg(tmp_path, sync="none", sim_train_seconds=60.0, num_steps=1)
    p = subprocess.Popen([sys.executable, "-c", DRIVER, "--config", cfg.to_json()], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
                         start_new_session=True)
    events, t_sent = [], None
    try:
        for line in p.stdout:
            events.append(decode(line))
            e = events[-1]
            if isinstance(e, Phase) and e.name == "train" and e.edge == "start":
                time.sleep(0.2)
                t_sent = time.monotonic()
                p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert t_sent is not None and rc == 1
    assert time.monotonic() - t_sent < 10  # did not sit out the training hold
    train_end = [e for e in events if isinstance(e, Phase) and e.name == "train" and e.edge == "end"]
    assert len(train_end) == 1 and train_end[0].ok is False and train_end[0].detail == "cancelled"
    assert not [e for e in events if isinstance(e, Phase) and e.name == "reload"]
    assert isinstance(events[-1], RunEnd) and events[-1].status == "cancelled"
    assert [e.action for e in events if isinstance(e, Proc)] == ["start", "exit"]  # reaped, and said so
    assert_gone(events, cfg.port)


def test_runner_stops_when_its_orchestrator_is_gone(tmp_path):
    """The orchestrator died (its end of the pipe closed) while the runner sits in a long train step that
    emits nothing: the runner notices within seconds, stops its engine group and exits."""
    cfg = make_cfg(tmp_path, sync="none", sim_train_seconds=120.0, num_steps=1)
    p = subprocess.Popen([sys.executable, "-c", DRIVER, "--config", cfg.to_json()], stdout=subprocess.PIPE,
                         stderr=open(tmp_path / "runner.err", "wb"), env={**os.environ, "PYTHONPATH": str(REPO)},
                         cwd=tmp_path, start_new_session=True)
    events = []
    try:
        for line in p.stdout:
            events.append(decode(line))
            e = events[-1]
            if isinstance(e, Phase) and e.name == "train" and e.edge == "start":
                break
        p.stdout.close()  # what the kernel does to the pipe when the orchestrator is killed
        t0 = time.monotonic()
        rc = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert rc == 1 and time.monotonic() - t0 < 10
    assert b"the orchestrator is gone" in (tmp_path / "runner.err").read_bytes()
    assert_gone(events, cfg.port)


# -- the runner process ----------------------------------------------------------------------------------
def test_runner_stdout_carries_only_events(tmp_path):
    """`python -m sgtui.runner` where vLLM is not installed: stray output goes to stderr, every stdout line is
    an event, and the failure is IMPORT_ERROR with the server's log tail."""
    cfg = make_cfg(tmp_path, python=sys.executable, startup_timeout=60.0)
    code = ("import sys, runpy; print('stray print before the emitter'); sys.argv = ['sgtui.runner'] + sys.argv[1:];"
            " runpy.run_module('sgtui.runner', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, "--config", cfg.to_json()], capture_output=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    lines = r.stdout.splitlines()
    assert lines and lines[0] == b"stray print before the emitter"  # printed before the runner took stdout
    events = [decode(line, i) for i, line in enumerate(lines[1:], 2)]  # raises on anything but an event
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd) and events[-1].status == "failed"
    err = [e for e in events if isinstance(e, Error)]
    assert err and err[0].category == "IMPORT_ERROR" and any("vllm" in line for line in err[0].log_tail)
    assert [p.action for p in events if isinstance(p, Proc)] == ["start", "exit"]
    assert r.returncode == 1


def test_emitter_keeps_library_prints_off_the_event_stream():
    code = ("import os, sys; from sgtui.runner.emit import Emitter; from sgtui.events import RunEnd;"
            "e = Emitter.take_stdout(); print('from print', flush=True); os.system('echo from a child');"
            "sys.stdout.write('from write\\n'); sys.stdout.flush(); e(RunEnd(t=1.0, run='x'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0
    assert [type(decode(x)) for x in r.stdout.splitlines()] == [RunEnd]
    assert b"from print" in r.stderr and b"from a child" in r.stderr and b"from write" in r.stderr
