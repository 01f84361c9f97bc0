"""SGLang engine: argv, every strategy's HTTP sequence, timing attribution, the idle guard, failure modes.

The HTTP behaviour is checked against `sglang_fault_server.py`, a FAULT-INJECTION server that speaks
SGLang's real endpoints (started by the engine itself, in its own process group, from the engine's
real argv). What the real SGLang CPU server can show is in test_sglang_real.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from sgtui.events import Request
from sgtui.runner.engines.base import EngineError, parse_version
from sgtui.runner.engines.sglang import CPU_COMPAT, CPU_FLAGS, SglangEngine, capacity_from_server_info
from sgtui.runner.engines.sglang_idle import loads
from tests.runner.engine_cases import SGLANG, FaultSglang
from tests.runner.fault_harness import (adapter_dir, assert_calls_in_their_phase, assert_gone,
                                        assert_outside_step_phases, assert_sigkilled_after_grace, greedy_checks,
                                        phase_spans, run_steps, stopped_after)
from tests.runner.sglang_adapter_check import check_request_model, verify_adapter

make_cfg, make_engine = SGLANG.make_cfg, SGLANG.engine


# -- argv and environment -------------------------------------------------------------------------------
def test_argv_gpu_release_lora(tmp_path):
    cfg = make_cfg(tmp_path, device="cuda", tp=2, gpu_memory_utilization=0.9, lora_rank=16, dtype="bfloat16",
                   disable_radix_cache=True, extra_args=["--sampling-backend", "pytorch"], max_model_len=4096)
    eng = SglangEngine(cfg, lambda e: None, tmp_path)
    argv = eng.server_argv()
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    flag = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    assert flag["--model-path"] == cfg.model and flag["--host"] == "127.0.0.1" and flag["--port"] == str(cfg.port)
    assert flag["--tp-size"] == "2" and flag["--mem-fraction-static"] == "0.9" and flag["--context-length"] == "4096"
    assert flag["--dtype"] == "bfloat16" and flag["--max-lora-rank"] == "16" and flag["--max-loras-per-batch"] == "2"
    for f in ("--enable-memory-saver", "--enable-metrics", "--enable-lora", "--disable-radix-cache"):
        assert f in argv
    i = argv.index("--lora-target-modules")
    assert argv[i + 1: i + 8] == cfg.lora_targets
    assert "--device" not in argv and "--lora-backend" not in argv and "--lora-paths" not in argv
    assert argv[-2:] == ["--sampling-backend", "pytorch"]  # extra user flags last: they win
    env = eng.server_env()
    assert "SGLANG_USE_CPU_ENGINE" not in env and str(CPU_COMPAT) not in env.get("PYTHONPATH", "")
    assert env["HF_HUB_OFFLINE"] == "1"


def test_argv_cpu_restart_preloads_adapter(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    cfg = make_cfg(tmp_path, device="cpu", strategy="restart", sync="restart")
    eng = SglangEngine(cfg, lambda e: None, tmp_path / "run")
    argv = eng.server_argv(adapter_dir="/adapters/step-3")
    joined = " ".join(argv)
    assert " ".join(CPU_FLAGS) in joined
    assert "--enable-memory-saver" not in argv and "--mem-fraction-static" not in argv
    assert argv[argv.index("--lora-backend") + 1] == "torch_native"
    assert argv[argv.index("--lora-paths") + 1] == "policy-1=/adapters/step-3"
    env = eng.server_env()
    assert env["SGLANG_USE_CPU_ENGINE"] == "1"
    assert env["PYTHONPATH"] == f"{CPU_COMPAT}{os.pathsep}/somewhere"
    assert (CPU_COMPAT / "sitecustomize.py").is_file() and (CPU_COMPAT / "sgl_kernel" / "__init__.py").is_file()
    assert env["SGLANG_CACHE_DIR"] == str(tmp_path / "sglang-cache")  # beside the run dirs: warm across runs


def test_argv_no_lora_without_adapter_sync(tmp_path):
    eng = SglangEngine(make_cfg(tmp_path, sync="none", device="cuda", strategy="restart"), lambda e: None, tmp_path)
    argv = eng.server_argv()
    assert "--enable-lora" not in argv and "--enable-memory-saver" not in argv


def test_version_and_load_parsing():
    assert parse_version("0.5.17") == (0, 5, 17) and parse_version("0.4.6.post1") == (0, 4, 6)
    assert parse_version("0.5.0rc2") == (0, 5, 0) and parse_version("") == ()
    assert loads({"loads": [{"num_running_reqs": 3, "num_waiting_reqs": 1},
                             {"num_running_reqs": 2, "num_waiting_reqs": 0}]}) == (5.0, 1.0)
    assert loads([{"num_reqs": 4, "num_waiting_reqs": 1}]) == (3.0, 1.0)  # /get_load: running + waiting


def test_capacity_from_server_info_prefers_the_live_scheduler_state():
    """0.5.23 answers both: the startup number at the top, each DP rank's live pool in internal_states."""
    doc = {"max_total_num_tokens": 16384, "internal_states": [{"memory_usage": {"token_capacity": 12000}},
                                                              {"memory_usage": {"token_capacity": 11000}}]}
    assert capacity_from_server_info(doc) == {"kv_capacity_tokens": 23000.0}
    assert capacity_from_server_info({"max_total_num_tokens": 16384}) == {"kv_capacity_tokens": 16384.0}
    assert capacity_from_server_info({"version": "0.4.9"}) == {} and capacity_from_server_info([]) == {}


async def test_kv_capacity_after_resume_is_what_the_scheduler_has_then(tmp_path):
    """A resume that brings back a smaller pool shows in the reading after it; the scrapes stay /metrics only."""
    eng, _ = make_engine(tmp_path, {"token_capacity": 16384, "capacity_after_resume": 9000})
    async with stopped_after(eng):
        await eng.start()
        assert await eng.capacity() == {"kv_capacity_tokens": 16384.0}
        await eng.offload()
        await eng.reload(None)
        assert await eng.capacity() == {"kv_capacity_tokens": 9000.0}
        assert "kv_capacity_tokens" not in await eng.scrape()
        assert await eng.version() == "0.5.23"
        paths = [c["path"] for c in eng.calls()]
        # the version at start and here, two capacities: never the deprecated route
        assert paths.count("/server_info") == 4 and "/get_server_info" not in paths


# -- strategies: HTTP sequences ---------------------------------------------------------------------------
async def test_release_cpu_sequence_and_idle_guard(tmp_path):
    """The guard asks the server: 5 polls report a request our client never sent; release waits them out."""
    eng, events = make_engine(tmp_path, {"busy_polls": 5})
    async with stopped_after(eng):
        assert await eng.start() == "cold start"
        assert eng.server_version == "0.5.23"
        detail = await eng.offload()
        assert "cpu: memory saver is CUDA-only, nothing freed" in detail
        calls = eng.calls()
        loads = [c for c in calls if c["path"] == "/v1/loads"]
        release = [c for c in calls if c["path"] == "/release_memory_occupation"]
        assert len(loads) >= 6 and len(release) == 1
        assert release[0]["t0"] >= loads[-1]["t1"]  # released only after the server said idle
        assert release[0]["body"] == {"tags": ["kv_cache", "weights", "cuda_graph"]}
        assert await eng.offload() == "already released"  # never twice
        detail = await eng.reload(None)
        assert detail.startswith("resume weights") and "update_weights_from_disk" not in detail  # CPU keeps them
        assert eng.control_calls() == [("/flush_cache", {}),
                                       ("/release_memory_occupation", ["kv_cache", "weights", "cuda_graph"]),
                                       ("/resume_memory_occupation", ["weights"]),
                                       ("/resume_memory_occupation", ["kv_cache", "cuda_graph"])]
        assert await eng.reload(None) == "nothing released"  # a second resume would kill SGLang
        assert eng.child.alive()
    assert_gone(events, eng.cfg.port)


async def test_release_gpu_reloads_base_weights_between_resumes(tmp_path):
    eng, _ = make_engine(tmp_path, device="cuda")
    async with stopped_after(eng):
        await eng.start()
        assert "--enable-memory-saver" in eng.last_argv
        assert "cpu:" not in await eng.offload()
        detail = await eng.reload(None)
        assert [p for p, _ in eng.control_calls()] == [
            "/flush_cache", "/release_memory_occupation", "/resume_memory_occupation", "/update_weights_from_disk",
            "/resume_memory_occupation"]
        upd = [c for c in eng.calls() if c["path"] == "/update_weights_from_disk"][0]
        assert upd["body"] == {"model_path": eng.cfg.model}
        assert "update_weights_from_disk (base weights)" in detail


async def test_release_gpu_with_weights_cpu_backup_skips_disk_reload(tmp_path):
    eng, _ = make_engine(tmp_path, device="cuda", extra_args=["--enable-weights-cpu-backup"])
    async with stopped_after(eng):
        await eng.start()
        await eng.offload()
        await eng.reload(None)
        assert "/update_weights_from_disk" not in [p for p, _ in eng.control_calls()]


async def test_old_server_untagged_release_and_legacy_load(tmp_path):
    """Before 0.5 (no /v1/loads, tags not known to exist): /get_load and untagged calls."""
    eng, _ = make_engine(tmp_path, {"version": "0.4.9", "no_loads": True, "legacy_load": True, "busy_polls": 2},
                         device="cuda")
    async with stopped_after(eng):
        await eng.start()
        await eng.offload()
        await eng.reload(None)
        assert eng.control_calls() == [("/get_load", {}), ("/get_load", {}), ("/get_load", {}), ("/flush_cache", {}),
                                       ("/release_memory_occupation", {}), ("/resume_memory_occupation", {}),
                                       ("/update_weights_from_disk", {"model_path": eng.cfg.model})]


async def test_release_waits_for_the_schedulers_last_batch(tmp_path):
    """/v1/loads counts no request while the scheduler's last batch still lingers (a loop iteration on a loaded
    box; CI saw SGLang kill itself on the release then): the guard waits for /flush_cache to succeed, which
    SGLang does only when fully idle, and releases after it."""
    eng, _ = make_engine(tmp_path, {"lingering_batch": 3})
    async with stopped_after(eng):
        await eng.start()
        await eng.offload()
        calls = [c for c in eng.calls() if c["path"] in ("/flush_cache", "/release_memory_occupation")]
        assert [(c["path"], c["code"]) for c in calls] == [("/flush_cache", 400)] * 3 + [
            ("/flush_cache", 200), ("/release_memory_occupation", 200)]
        assert eng.child.alive()


async def test_batch_that_never_goes_times_out_saying_so(tmp_path):
    eng, _ = make_engine(tmp_path, {"lingering_batch": 10_000}, server_timeout=0.5)
    async with stopped_after(eng):
        await eng.start()
        with pytest.raises(EngineError) as ei:
            await eng.offload()
        assert ei.value.category == "SERVER_TIMEOUT" and "not fully idle (/flush_cache refused)" in ei.value.message
        assert "/release_memory_occupation" not in [p for p, _ in eng.control_calls()] and eng.child.alive()


async def test_fault_server_control_release_with_a_lingering_batch_kills_it(tmp_path):
    """Control for the test above: releasing as soon as /v1/loads says idle, with the last batch still there,
    ends the server (SGLang's `is_fully_idle` assertion)."""
    eng, _ = make_engine(tmp_path, {"lingering_batch": 3})
    async with stopped_after(eng):
        await eng.start()
        assert await eng.idle.load() == (0.0, 0.0)
        with pytest.raises(EngineError) as ei:
            await eng.control("/release_memory_occupation", json={})
        assert ei.value.category == "SERVER_CRASH" and not eng.child.alive()


async def test_fault_server_dies_like_sglang_when_released_busy(tmp_path):
    """Control for the guard: releasing while the server runs a request ends the server (as SGLang 0.5.23 does)."""
    eng, _ = make_engine(tmp_path, {"busy_polls": 100})
    async with stopped_after(eng):
        await eng.start()
        with pytest.raises(EngineError) as ei:
            await eng.control("/release_memory_occupation", json={})
        assert ei.value.category == "SERVER_CRASH" and "while a request was still running" in ei.value.advice
        assert not eng.child.alive()


async def test_idle_guard_times_out_as_server_timeout(tmp_path):
    eng, _ = make_engine(tmp_path, {"busy_polls": 10_000}, server_timeout=0.5)
    async with stopped_after(eng):
        await eng.start()
        with pytest.raises(EngineError) as ei:
            await eng.offload()
        assert ei.value.category == "SERVER_TIMEOUT" and "1 running" in ei.value.message
        assert "/release_memory_occupation" not in [p for p, _ in eng.control_calls()]


async def test_lora_sync_unloads_previous_then_loads_and_flushes(tmp_path):
    eng, _ = make_engine(tmp_path, flush_cache=True)
    a0, a1 = adapter_dir(tmp_path, "a0"), adapter_dir(tmp_path, "a1")
    async with stopped_after(eng):
        await eng.start()
        assert eng.request_model() == "policy"
        assert await eng.sync_weights(a0, 0) == "load policy-s0, flush_cache"
        assert eng.request_model() == "policy:policy-s0"
        assert await eng.sync_weights(a1, 1) == "unload policy-s0, load policy-s1, flush_cache"
        assert eng.control_calls() == [
            ("/load_lora_adapter", {"lora_name": "policy-s0", "lora_path": a0}), ("/flush_cache", {}),
            ("/unload_lora_adapter", {"lora_name": "policy-s0"}),
            ("/load_lora_adapter", {"lora_name": "policy-s1", "lora_path": a1}), ("/flush_cache", {})]
        assert await verify_adapter(eng, "the prompt") == "policy:policy-s1 differs from the base model"
        with pytest.raises(EngineError) as ei:  # a bad path: SGLang answers 400 with its message
            await eng.sync_weights(str(tmp_path / "missing"), 2)
        assert "400" in ei.value.message and "does not exist" in ei.value.message


async def test_disk_sync_needs_a_checkpoint(tmp_path):
    eng, _ = make_engine(tmp_path, sync="disk")
    ckpt = Path(adapter_dir(tmp_path, "merged"))
    (ckpt / "model-00001-of-00001.safetensors").write_bytes(b"")
    async with stopped_after(eng):
        await eng.start()
        with pytest.raises(EngineError) as ei:  # a directory without weights never reaches the server
            await eng.load_checkpoint(adapter_dir(tmp_path, "peft-only"))
        assert ei.value.category == "WEIGHT_SYNC" and "no safetensors" in ei.value.message
        assert ("/update_weights_from_disk", {"model_path": str(ckpt)}) not in eng.control_calls()
        await eng.load_checkpoint(str(ckpt))
        assert eng.control_calls()[-1] == ("/update_weights_from_disk", {"model_path": str(ckpt)})
        assert await eng.after_full_sync() == "update_weights_from_disk (cache flushed)"


# -- wrong adapter names ----------------------------------------------------------------------------------
async def test_wrong_adapter_is_detected(tmp_path):
    eng, _ = make_engine(tmp_path, {"adapter_is_noop": True})
    async with stopped_after(eng):
        await eng.start()
        await eng.sync_weights(adapter_dir(tmp_path), 0)
        # SGLang echoes a bare name and serves it with the base model: never send one.
        assert not eng.served_model_matches("policy-s0", "policy-s0")
        assert eng.served_model_matches("policy:policy-s0", "policy:policy-s0")
        with pytest.raises(EngineError) as ei:
            check_request_model(eng, "policy-s0")
        assert ei.value.category == "CONFIG" and "BASE:NAME" in ei.value.advice
        with pytest.raises(EngineError) as ei:  # right name, but the output is the base model's
            await verify_adapter(eng, "p")
        assert ei.value.category == "CONFIG" and "exactly like the base model" in ei.value.message
        eng.loaded = "never-loaded"
        with pytest.raises(EngineError) as ei:
            await verify_adapter(eng, "p")
        assert ei.value.category == "CONFIG" and "never been loaded" in ei.value.message


# -- failures -------------------------------------------------------------------------------------------
async def test_scheduler_dead_http_up_503_is_a_crash_and_teardown_needs_sigkill(tmp_path):
    eng, events = make_engine(tmp_path, {"ignore_sigterm": True})
    async with stopped_after(eng):
        await eng.start()
        await eng.check_crashed()  # healthy: returns
        os.kill(eng.child.pid, signal.SIGUSR1)  # the "scheduler" dies, the HTTP server stays up
        t = time.monotonic()
        with pytest.raises(EngineError) as ei:
            while time.monotonic() - t < 5:  # the signal lands asynchronously: a busy machine may lag
                await eng.check_crashed()
                await asyncio.sleep(0.05)
        assert ei.value.category == "SERVER_CRASH" and "503" in ei.value.message
        assert eng.child.alive()
        pgid = eng.child.pgid
        await assert_sigkilled_after_grace(eng, events)  # SIGTERM ignored: SIGKILL after the grace
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)
    assert_gone(events, eng.cfg.port)


async def test_tp_imbalance_at_startup(tmp_path):
    line = ("RuntimeError: The memory capacity is unbalanced. Some GPUs may be occupied by other processes. "
            "pre_model_load_memory=61.2, local_gpu_memory=79.1, local_gpu_memory * 0.9=71.19")
    eng, events = make_engine(tmp_path, {"startup_log": [line], "exit_at_startup": 1}, device="cuda", tp=2)
    async with stopped_after(eng):
        with pytest.raises(EngineError) as ei:
            await eng.start()
        assert ei.value.category == "TP_IMBALANCE"
        assert "SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK=0" in ei.value.advice
    assert_gone(events, eng.cfg.port)


# -- timing attribution through the real runner -------------------------------------------------------------
async def test_runner_attributes_each_call_to_its_phase(tmp_path):
    """The real step loop with delays injected per endpoint: each delay lands in its own phase only."""
    delays = {"/release_memory_occupation": 0.3, "/resume_memory_occupation": 0.2, "/load_lora_adapter": 0.25}
    cfg = make_cfg(tmp_path, initial_adapter=adapter_dir(tmp_path, "initial"))
    eng, events = await run_steps(FaultSglang, cfg, {"delays": delays, "busy_polls": 3})
    phases = phase_spans(events)
    assert_calls_in_their_phase(eng.calls(), phases, {
        "/release_memory_occupation": "offload", "/resume_memory_occupation": "reload",
        "/load_lora_adapter": "weight_sync", "/unload_lora_adapter": "weight_sync"})
    dur = {k: b - a for k, (a, b) in phases.items()}
    for step in (1, 2):
        assert dur[(step, "offload")] >= 0.3 and dur[(step, "reload")] >= 0.4  # two resumes of 0.2 s
        assert dur[(step, "weight_sync")] >= 0.25
        assert dur[(step, "weight_sync")] < 0.25 + 0.2  # no resume in weight sync
        assert dur[(step, "reload")] < 0.4 + 0.25  # no adapter load in reload
    # the verification requests run outside every timed phase
    checks = greedy_checks(eng.calls())
    assert checks
    assert_outside_step_phases(checks, phases)
    reqs = [e for e in events if isinstance(e, Request)]
    assert {r.served_model for r in reqs if r.step == 1} == {"policy:policy-s0"}
    assert {r.served_model for r in reqs if r.step == 2} == {"policy:policy-s1"}
    assert all(not r.error for r in reqs)
