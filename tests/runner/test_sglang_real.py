"""The SGLang engine against the REAL SGLang 0.5.23 server on this CPU (one server for the module).

Setup: `bash setup/setup.sh` (venv ~/.cache/sgtui/venvs/sglang-cpu-0.5.23 and the tiny model); skipped
with the reason when either is missing. The tests run in file order on one server; one hot-loads an adapter
that the real megatron trainer (`sgtui setup --cpu`) just trained; the last one kills its scheduler and
checks that the crash is detected and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sgtui.config import RunConfig
from sgtui.events import Proc, Train
from sgtui.runner import loadgen
from sgtui.runner.engines.base import EngineError
from sgtui.runner.engines.sglang import CPU_FLAGS, SglangEngine
from sgtui.runner.workload import Prompt
from tests.engines import SGLANG_PY, TINY, free_port, needs_sglang, port_is_free
from tests.runner import sglang_adapter_check as adapters
from tests.trainer.conftest import needs_trainer, trainer_groups

pytestmark = [pytest.mark.engine, needs_sglang]
PROMPT = "the model reads a question and writes an answer step by step"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    loop = asyncio.new_event_loop()
    wd = tmp_path_factory.mktemp("sglang-real")
    cfg = RunConfig(label="sg-real", backend="sglang", strategy="release", sync="lora", python=str(SGLANG_PY),
                    model=str(TINY), port=free_port(), workdir=str(wd / "run"), max_input_tokens=32,
                    max_output_tokens=96, flush_cache=True, server_timeout=60.0, startup_timeout=300.0,
                    request_timeout=120.0)
    events: list = []
    (wd / "run").mkdir()
    eng = SglangEngine(cfg, events.append, wd / "run")
    t0 = time.monotonic()
    try:
        detail = loop.run_until_complete(eng.start())
    except BaseException:
        loop.run_until_complete(eng.stop())
        raise
    s = SimpleNamespace(eng=eng, cfg=cfg, events=events, loop=loop, wd=wd, detail=detail,
                        startup_s=time.monotonic() - t0, run=loop.run_until_complete)
    yield s
    loop.run_until_complete(eng.stop())
    loop.run_until_complete(eng.aclose())
    loop.close()


def greedy(s, model: str, n: int = 12) -> tuple[str, str]:
    return s.run(adapters.greedy(s.eng, model, PROMPT, n))


def zero_lora_b(src: Path, dst: Path) -> None:
    """Copy a PEFT adapter with every lora_B tensor zeroed (a no-op adapter), editing safetensors bytes."""
    shutil.copytree(src, dst)
    path = dst / "adapter_model.safetensors"
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    zeroed = 0
    for name, meta in header.items():
        if "lora_B" in name:
            a, b = meta["data_offsets"]
            raw[8 + n + a: 8 + n + b] = bytes(b - a)
            zeroed += 1
    assert zeroed
    path.write_bytes(bytes(raw))


def test_startup_health_and_version(srv):
    assert srv.detail == "cold start"
    assert srv.eng.server_version == "0.5.23"
    assert srv.run(srv.eng.idle.load()) == (0.0, 0.0)
    print(f"\nsglang cpu startup to /health + /health_generate: {srv.startup_s:.1f} s")


def test_streaming_generation_and_gauges(srv):
    prompts = [Prompt(id=str(i), text=f"{PROMPT} {i}") for i in range(4)]

    async def go():
        client = loadgen.make_client(4, 60.0)
        try:
            return await loadgen.run_batch(client, srv.eng.base_url, "completions", srv.eng.request_model(), prompts,
                                           concurrency=4, max_tokens=16, temperature=1.0, seed=1, run="r", step=1,
                                           emit=None)
        finally:
            await client.close()

    outs = srv.run(go())
    assert all(not o.error for o in outs), [o.error for o in outs]
    assert all(o.output_tokens == 16 and o.ttft > 0 and o.served_model == "policy" for o in outs)
    gauges = srv.run(srv.eng.scrape())
    assert set(gauges) == {"kv_usage", "running", "waiting", "prefix_hit_rate", "gen_throughput"}
    # the KV pool, from /server_info: what --max-total-tokens made it on CPU
    tokens = float(CPU_FLAGS[CPU_FLAGS.index("--max-total-tokens") + 1])
    assert srv.run(srv.eng.capacity()) == {"kv_capacity_tokens": tokens}


def test_release_and_resume_answer_and_keep_serving(srv):
    before = greedy(srv, "policy")
    detail = srv.run(srv.eng.offload())
    assert detail.startswith("release_memory_occupation (weights, kv_cache, cuda_graph)")
    assert detail.endswith("(cpu: memory saver is CUDA-only, nothing freed)")
    detail = srv.run(srv.eng.reload(None))
    assert detail.startswith("resume weights") and "resume kv_cache+cuda_graph" in detail
    assert srv.run(srv.eng.reload(None)) == "nothing released"  # a second resume would kill SGLang
    assert greedy(srv, "policy") == before
    srv.eng.check_alive()


def test_release_waits_for_requests_running_in_the_server(srv):
    """Requests in flight when offload starts: the guard waits for the scheduler, and SGLang survives
    (releasing now would make it assert and exit, as test_sglang_engine's control test shows)."""
    prompts = [Prompt(id=str(i), text=PROMPT) for i in range(12)]

    async def go():
        client = loadgen.make_client(12, 120.0)
        batch = asyncio.create_task(loadgen.run_batch(
            client, srv.eng.base_url, "completions", "policy", prompts, concurrency=12, max_tokens=96,
            temperature=1.0, seed=2, run="r", step=1, emit=None))
        try:
            deadline = time.monotonic() + 30
            while (await srv.eng.idle.load())[0] == 0:
                assert time.monotonic() < deadline and not batch.done()
                await asyncio.sleep(0.005)
            detail = await srv.eng.offload()
            outs = await batch
        finally:
            await client.close()
        return detail, outs

    detail, outs = srv.run(go())
    waited_ms = float(detail.split(" after ")[1].split(" ms")[0])
    assert waited_ms > 0
    assert all(not o.error and o.output_tokens == 96 for o in outs)
    srv.eng.check_alive()
    srv.run(srv.eng.reload(None))
    assert greedy(srv, "policy")[0] == "policy"


def test_lora_adapter_changes_greedy_output(srv):
    _, base = greedy(srv, "policy")
    adapter = TINY / "adapters" / "initial"
    assert srv.run(srv.eng.sync_weights(str(adapter), 0)) == "load policy-s0, flush_cache"
    assert srv.eng.request_model() == "policy:policy-s0"
    served, text = greedy(srv, srv.eng.request_model())
    assert served == "policy:policy-s0" and text != base
    assert srv.run(adapters.verify_adapter(srv.eng, PROMPT)) == "policy:policy-s0 differs from the base model"
    copy = srv.wd / "step-1"
    shutil.copytree(adapter, copy)
    assert srv.run(srv.eng.sync_weights(str(copy), 1)) == "unload policy-s0, load policy-s1, flush_cache"
    assert greedy(srv, "policy:policy-s1")[1] == text  # same weights under the new name


def test_wrong_adapter_name_is_detected(srv):
    _, base = greedy(srv, "policy")
    # SGLang serves a bare adapter name with the base model and echoes the name: silently wrong.
    served, text = greedy(srv, "policy-s1")
    assert served == "policy-s1" and text == base
    assert not srv.eng.served_model_matches("policy-s1", served)
    with pytest.raises(EngineError) as ei:
        adapters.check_request_model(srv.eng, "policy-s1")
    assert ei.value.category == "CONFIG"
    # A BASE:NAME that was never loaded is refused by SGLang (400).
    with pytest.raises(EngineError) as ei:
        greedy(srv, "policy:nope")
    assert ei.value.category == "CONFIG" and "never been loaded" in ei.value.message
    # The right name, but an adapter that does nothing: the greedy comparison catches it.
    noop = srv.wd / "noop"
    zero_lora_b(TINY / "adapters" / "initial", noop)
    srv.run(srv.eng.sync_weights(str(noop), 2))
    with pytest.raises(EngineError) as ei:
        srv.run(adapters.verify_adapter(srv.eng, PROMPT))
    assert ei.value.category == "CONFIG" and "exactly like the base model" in ei.value.message


@needs_trainer
def test_persistent_tp2_trainer_scores_sglang_rollouts_mismatch_with_and_without_sync(srv):
    """The persistent megatron-core trainer (TP=2, gloo, launched once) trains on SGLang's rollouts, with the
    token ids and logprobs SGLang returned, for three steps. Step 1: both hold the initial adapter, so the
    trainer's logprobs of the sampled tokens match SGLang's. Step 2 rolls out WITHOUT a sync: SGLang still
    serves the initial adapter, the trainer has step 1's, and the mismatch jumps. Step 3 rolls out after
    hot-loading the trainer's step-2 export into SGLang: the mismatch is back near zero, which also proves
    SGLang accepts the exported keys, rank and targets and serves them."""
    from sgtui.runner import rewards
    from sgtui.runner.trainer.base import Rollout
    from sgtui.runner.trainer.megatron_trainer import MegatronTrainer

    initial = str(TINY / "adapters" / "initial")
    cfg = RunConfig.from_dict({**srv.cfg.to_dict(), "mode": "training", "trainer": "megatron", "device": "cpu",
                               "learning_rate": 1e-2, "train_tp": 2, "workdir": str(srv.wd / "train"),
                               "initial_adapter": initial})
    events: list = []
    trainer = MegatronTrainer(cfg, events.append, srv.wd / "train")
    prompts = [Prompt(id=f"p{i}", text=f"{PROMPT} {i // 2}", group=i // 2, seed_offset=i) for i in range(4)]

    async def rollout(client, step: int) -> list[Rollout]:
        outs = await loadgen.run_batch(client, srv.eng.base_url, "completions", srv.eng.request_model(), prompts,
                                       concurrency=4, max_tokens=16, temperature=1.0, seed=1000 * step, run="",
                                       step=step, emit=None, want_logprobs=True)
        assert not [o.error for o in outs if o.error]
        assert all(len(o.token_ids) == len(o.logprobs) == 16 and o.prompt_ids for o in outs)
        return [Rollout(prompt=o.prompt.text, completion=o.text, group=o.prompt.group,
                        reward=rewards.reward(o.text, ""), prompt_ids=o.prompt_ids, completion_ids=o.token_ids,
                        logprobs=o.logprobs) for o in outs]

    async def go() -> list[str]:
        client = loadgen.make_client(4)
        try:
            assert (await trainer.start()).startswith("torchrun TP=2 ready")
            await srv.eng.sync_weights(initial, 0)
            await trainer.train(1, await rollout(client, 1))
            adapter2 = await trainer.train(2, await rollout(client, 2))  # no sync after step 1
            await srv.eng.sync_weights(adapter2, 2)
            await trainer.train(3, await rollout(client, 3))
            return [srv.eng.request_model()]
        finally:
            await trainer.close()
            await client.close()

    (model,) = srv.run(go())
    assert model == "policy:policy-s2"
    mm = {e.step: e.mismatch for e in events if isinstance(e, Train)}
    assert set(mm) == {1, 2, 3} and all(m["tokens"] == 4 * 16 for m in mm.values())
    for step in (1, 3):
        assert mm[step]["mean_abs"] < 1e-3 and abs(mm[step]["k3"]) < 1e-5, mm
    assert mm[2]["mean_abs"] > max(1e-3, 20 * mm[3]["mean_abs"]) and mm[2]["k3"] > 100 * abs(mm[3]["k3"]), mm
    torchrun, ranks = trainer_groups(events)
    assert torchrun == ["start", "exit"] and len(ranks) == 2  # one launch for three steps


def test_scheduler_killed_is_a_crash_and_nothing_is_left(srv):
    eng = srv.eng
    pgid = eng.child.pgid
    sched = [pid for pid in _group(pgid) if _cmdline(pid).startswith("sglang::scheduler")]
    assert len(sched) == 1, [_cmdline(p) for p in _group(pgid)]
    os.kill(sched[0], signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(EngineError) as ei:
        srv.run(eng.check_crashed())
    assert ei.value.category == "SERVER_CRASH"
    detect_s = time.monotonic() - t
    srv.run(eng.stop())
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert port_is_free(srv.cfg.port)
    assert not _owned_by_me()
    procs = [e for e in srv.events if isinstance(e, Proc)]
    assert [p.action for p in procs] == ["start", "exit"]
    print(f"\nscheduler killed -> crash detected in {detect_s:.1f} s")


def _group(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _owned_by_me() -> list[int]:
    """Live processes started by this test process (sgtui marks every child with its owner's pid)."""
    mark = f"SGTUI_OWNER_PID={os.getpid()}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if mark in (d / "environ").read_bytes().split(b"\0") and "Z" not in (d / "stat").read_text().split()[2]:
                    out.append(int(d.name))
            except OSError:
                pass
    return out
