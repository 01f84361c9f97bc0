"""What vLLM and SGLang must do alike: restart strategy and sync, start-up and control-call timeouts, OOM
when brought back, teardown of a server that ignores SIGTERM, a port already taken.

Each test runs once per engine (engine_cases.CASES), the real engine class against its FAULT-INJECTION
server; the names and texts that differ come from the case. The engine-specific cases are in
test_vllm_engine.py and test_sglang_engine.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sgtui.events import Proc
from sgtui.runner import loadgen
from sgtui.runner.engines.base import EngineError
from sgtui.runner.engines.sglang import SglangEngine
from sgtui.runner.workload import Prompt
from tests.engines import port_is_free
from tests.runner.engine_cases import CASES, EngineCase
from tests.runner.fault_harness import adapter_dir, assert_gone, assert_sigkilled_after_grace, stopped_after

pytestmark = pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)


#: How each server logs a CUDA-graph capture (vLLM: gpu_model_runner.py; SGLang 0.5.23: cuda_graph_setup.py).
GRAPH_LOG = {
    "vllm": ("INFO 12-03 10:00:00 [gpu_model_runner.py:6581] Graph capturing finished in 12 secs, took 0.52 GiB",
             "CUDA graphs captured in 12 s, 0.52 GiB"),
    "sglang": ("[2026-12-03 10:00:00] Capture target decode CUDA graph end. bs=[1, 2, 4, 8], elapsed=9.81 s, "
               "mem usage=0.41 GB, avail mem=60.12 GB.", "target decode CUDA graph captured in 9.81 s, 0.41 GB"),
}


def test_gpu_argv_runs_the_engine_as_users_do(tmp_path, case: EngineCase):
    """On a GPU no eager mode and no CUDA-graph switch-off unless the user passes one (then it is theirs, last)."""
    real = case.cls.__mro__[2]  # FaultX -> FaultServer -> the real engine class
    assert real.__module__.startswith("sgtui.runner.engines.")
    argv = real(case.make_cfg(tmp_path, device="cuda"), lambda e: None, tmp_path).server_argv()
    assert argv[2] in ("vllm.entrypoints.openai.api_server", "sglang.launch_server")
    assert not [a for a in argv if a == "--enforce-eager" or "cuda-graph" in a or "cuda_graph" in a], argv
    argv = real(case.make_cfg(tmp_path, device="cuda", extra_args=["--enforce-eager"]), lambda e: None,
                tmp_path).server_argv()
    assert argv[-1] == "--enforce-eager"
    cpu = real(case.make_cfg(tmp_path), lambda e: None, tmp_path).server_argv()  # CPU: what its server needs
    assert ("--enforce-eager" in cpu) == (case.name == "vllm")


async def test_start_records_the_argv_and_the_graph_capture(tmp_path, case: EngineCase):
    line, note = GRAPH_LOG[case.name]
    eng, events = case.engine(tmp_path, {"startup_log": ["loading weights", line]})
    assert eng.argv == []
    async with stopped_after(eng):
        detail = await eng.start()
        assert detail == f"cold start; {note}"
        spawned = [p.argv for p in events if isinstance(p, Proc) and p.action == "start"]
        assert spawned == [eng.argv] and eng.argv[-4] == "--sgtui-plan"  # exactly what was spawned
    eng, _ = case.engine(tmp_path / "plain")
    async with stopped_after(eng):
        assert await eng.start() == "cold start"  # no capture logged: nothing claimed


async def test_restart_strategy_stops_and_starts_the_group_with_the_adapter(tmp_path, case: EngineCase):
    eng, events = case.engine(tmp_path, strategy="restart", sync="restart")
    a = adapter_dir(tmp_path)
    async with stopped_after(eng):
        await eng.start()
        first = eng.child.pgid
        assert await eng.offload() == "server stopped (process group)"
        assert eng.child is None and port_is_free(eng.cfg.port)
        with pytest.raises(ProcessLookupError):
            os.killpg(first, 0)
        assert await eng.reload(a) == "warm restart (same machine, caches warm) with new adapter"
        assert eng.last_argv[eng.last_argv.index(case.lora_flag) + 1] == f"{case.restarted_adapter}={a}"
        assert eng.request_model() == case.restarted_model
        assert await eng.sync_weights(a, 1) == "included in reload (server restarted with the new adapter)"
        await case.assert_serves_adapter(eng)
        assert eng.control_calls() == []
    assert [p.action for p in events if isinstance(p, Proc)] == ["start", "exit", "start", "exit"]
    assert_gone(events, eng.cfg.port)


async def test_restart_sync_under_the_offload_strategy(tmp_path, case: EngineCase):
    """Sync by restart while the strategy offloads in place (sleep, release): the restart forgets the offload."""
    eng, events = case.engine(tmp_path, sync="restart")
    a = adapter_dir(tmp_path)
    async with stopped_after(eng):
        await eng.start()
        await eng.offload()
        await eng.reload(None)
        assert await eng.sync_weights(a, 1) == "server restarted with the new adapter"
        assert eng.request_model() == case.restarted_model and eng.starts == 2
        if isinstance(eng, SglangEngine):
            assert eng.released is None  # a second resume would kill SGLang
        await case.assert_serves_adapter(eng)
    assert_gone(events, eng.cfg.port)


async def test_startup_timeout_then_slow_control_call(tmp_path, case: EngineCase):
    eng, events = case.engine(tmp_path, {"never_healthy": True}, startup_timeout=1.0)
    async with stopped_after(eng):
        with pytest.raises(EngineError) as ei:
            await eng.start()
        assert ei.value.category == "STARTUP_TIMEOUT" and "within 1 s" in ei.value.message
        assert eng.child.alive()  # the caller stops it (the runner's cleanup)
    assert_gone(events, eng.cfg.port)
    eng, events = case.engine(tmp_path / "b", {"delays": {case.offload_path: 3.0}}, server_timeout=1.0)
    async with stopped_after(eng):
        await eng.start()
        with pytest.raises(EngineError) as ei:
            await eng.offload()
        assert ei.value.category == "SERVER_TIMEOUT" and case.offload_path in ei.value.message
    assert_gone(events, eng.cfg.port)


async def test_oom_when_brought_back_is_oom_with_the_log(tmp_path, case: EngineCase):
    eng, events = case.engine(tmp_path, case.oom_plan, device="cuda")
    async with stopped_after(eng):
        await eng.start()
        await eng.offload()
        with pytest.raises(EngineError) as ei:
            await eng.reload(None)
        assert ei.value.category == "OOM" and case.oom_advice in ei.value.advice
        if case.oom_message is not None:
            assert case.oom_message in ei.value.message
        assert any(case.oom_log in line for line in ei.value.log_tail)
    assert_gone(events, eng.cfg.port)


async def test_sigterm_ignored_teardown_needs_sigkill(tmp_path, case: EngineCase):
    eng, events = case.engine(tmp_path, {"ignore_sigterm": True})
    async with stopped_after(eng):
        await eng.start()
        env = (Path("/proc") / str(eng.child.pid) / "environ").read_bytes().split(b"\0")
        assert f"SGTUI_RUN={eng.cfg.label}".encode() in env and f"SGTUI_OWNER_PID={os.getpid()}".encode() in env
        await assert_sigkilled_after_grace(eng, events)
    assert_gone(events, eng.cfg.port)


async def test_port_in_use_before_spawning(tmp_path, case: EngineCase):
    eng, events = case.engine(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", eng.cfg.port))
        s.listen()
        with pytest.raises(EngineError) as ei:
            await eng.start()
    await eng.aclose()
    assert ei.value.category == "PORT_IN_USE" and eng.child is None and not events


async def test_streamed_events_cut_in_pieces_are_joined(tmp_path, case: EngineCase):
    """The load generator splits SSE lines itself (whole blocks, no line-length limit): an event that arrives
    in two reads must count as one token, with the text, usage and timings of an uncut stream."""
    got = {}
    for split in (False, True):
        eng, _ = case.engine(tmp_path / str(split), {"sse_split": split})
        async with stopped_after(eng):
            await eng.start()
            prompts = [Prompt(id=str(i), text=f"p{i}") for i in range(3)]
            async with loadgen.make_client(3, 30.0) as client:
                got[split] = await loadgen.run_batch(client, eng.base_url, "completions", eng.request_model(),
                                                     prompts, concurrency=3, max_tokens=12, temperature=0.0, seed=0,
                                                     run="r", step=1, emit=None)
    for whole, cut in zip(got[False], got[True]):
        assert not cut.error and (cut.text, cut.output_tokens, cut.served_model) == \
            (whole.text, whole.output_tokens, whole.served_model) and cut.output_tokens == 12
        assert cut.ttft > 0 and len(cut.itl) == len(whole.itl) == 11


async def test_latency_ends_at_the_last_token_chunk_not_at_the_end_of_the_stream(tmp_path, case: EngineCase):
    """As `vllm bench serve`: E2E latency is first send to the last chunk with text; a server that takes a
    while to send [DONE] and close (usage chunk, bookkeeping) must not lengthen it."""
    eng, _ = case.engine(tmp_path, {"done_delay": 0.5})
    async with stopped_after(eng):
        await eng.start()
        async with loadgen.make_client(2, 30.0) as client:
            out = await loadgen.run_batch(client, eng.base_url, "completions", eng.request_model(),
                                          [Prompt(id=str(i), text=f"p{i}") for i in range(2)], concurrency=2,
                                          max_tokens=8, temperature=0.0, seed=0, run="r", step=1, emit=None)
    for o in out:
        assert not o.error and o.output_tokens == 8
        assert o.latency < 0.4, o.latency  # the 0.5 s tail is not in it
        assert o.latency == pytest.approx(o.ttft + sum(o.itl), abs=1e-6)
