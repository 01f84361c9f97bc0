"""Full-weight sync against a REAL engine server on this CPU, shared by test_full_sync_vllm.py and
test_full_sync_sglang.py (one server per module, started fresh on merged weights).

The module fixture starts the persistent megatron trainer (TP=1, gloo) from the tiny model's initial adapter and
has it write that state merged (base + initial adapter) as a checkpoint D0 before any engine exists; the engine
then starts FRESH on D0. So "the same merged weights served fresh" is the module's own server, and a sync of
the same trainer state into it, after the base weights were put back, must answer bit for bit as it did
(greedy tokens and their logprobs). The syncs go through the runner's own code (`Runner.push_full`,
`Runner.check_full_sync`) with the module's engine and trainer plugged in.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sgtui.config import RunConfig
from sgtui.runner import loadgen, rewards, weights
from sgtui.runner.__main__ import Runner
from sgtui.runner.engines.base import EngineError
from sgtui.runner.trainer.base import Rollout
from sgtui.runner.trainer.megatron_trainer import MegatronTrainer
from sgtui.runner.workload import Prompt
from tests.engines import TINY, free_port

PROBE = Prompt(id="probe", text="the model reads a question and writes an answer step by step")
PROMPTS = [Prompt(id=f"p{i}", text=f"{PROBE.text} {i // 2}", group=i // 2, seed_offset=i) for i in range(4)]
#: tiny model tensors in float32 (model.safetensors minus its header): what one full sync hands over
TINY_BYTES = 2871808


def start(engine_cls, backend: str, python: str, strategy: str, sync: str, wd: Path, model: Path = TINY,
          **extra) -> SimpleNamespace:
    """Trainer up, D0 written, engine started fresh on D0; returns the module's handle (s.run runs a coroutine).
    `extra`: RunConfig fields (the GPU test: device, dtype, memory fraction, timeouts)."""
    loop = asyncio.new_event_loop()
    cfg = RunConfig(**{**dict(
        label=f"fs-{backend}", backend=backend, strategy=strategy, sync=sync, python=python, model=str(model),
        port=free_port(), workdir=str(wd / "run"), max_input_tokens=32, max_output_tokens=16, server_timeout=60.0,
        startup_timeout=300.0, request_timeout=120.0, mode="training", trainer="megatron", learning_rate=1e-2,
        initial_adapter=str(model / "adapters" / "initial")), **extra})
    cfg.validate()
    events: list = []
    (wd / "run").mkdir(parents=True)
    trainer = MegatronTrainer(cfg, events.append, wd / "run")
    s = SimpleNamespace(cfg=cfg, events=events, loop=loop, wd=wd, trainer=trainer, eng=None,
                        run=loop.run_until_complete)
    t0 = time.monotonic()
    s.run(trainer.start())
    s.d0 = wd / "d0"
    s.pushed0 = s.run(trainer.push(0, "disk", str(s.d0)))
    fresh_cfg = RunConfig.from_dict({**cfg.to_dict(), "model": str(s.d0)})  # served fresh on the merged weights
    s.eng = engine_cls(fresh_cfg, events.append, wd / "run")
    try:  # a set-up that fails leaves no server behind (a fixture that raises gets no teardown)
        s.run(s.eng.start())
        s.startup_s = time.monotonic() - t0
        s.runner = Runner(cfg, events.append)
        s.runner.engine, s.runner.trainer = s.eng, trainer
        s.fresh = probe(s)
    except BaseException:
        stop(s)
        raise
    return s


def stop(s: SimpleNamespace) -> None:
    try:
        if s.eng is not None:
            s.run(s.eng.stop())
            s.run(s.eng.aclose())
    finally:
        s.run(s.trainer.close())
        s.loop.close()


def probe(s: SimpleNamespace) -> weights.Probe:
    async def go():
        client = loadgen.make_client(1, 60.0)
        try:
            return await s.runner.probe_engine(client, PROBE)
        finally:
            await client.close()

    return s.run(go())


def rollouts(s: SimpleNamespace, step: int) -> list[Rollout]:
    async def go():
        client = loadgen.make_client(4, 60.0)
        try:
            return await loadgen.run_batch(client, s.eng.base_url, "completions", s.eng.request_model(), PROMPTS,
                                           concurrency=4, max_tokens=16, temperature=1.0, seed=1000 * step, run="",
                                           step=step, emit=None, want_logprobs=True)
        finally:
            await client.close()

    outs = s.run(go())
    assert not [o.error for o in outs if o.error]
    return [Rollout(prompt=o.prompt.text, completion=o.text, group=o.prompt.group, reward=rewards.reward(o.text, ""),
                    prompt_ids=o.prompt_ids, completion_ids=o.token_ids, logprobs=o.logprobs) for o in outs]


def check_probe(s: SimpleNamespace, step: int, pushed: dict) -> None:
    async def go():
        client = loadgen.make_client(1, 60.0)
        try:
            await s.runner.check_full_sync(client, PROBE, step, pushed)
        finally:
            await client.close()

    s.run(go())


def put_base_back(s: SimpleNamespace) -> weights.Probe:
    """The base model's weights into the engine (a plain reload of the model directory), probed."""
    s.run(s.eng.load_checkpoint(s.cfg.model))
    base = probe(s)
    assert not weights.same_probe(base, s.fresh)  # the initial adapter really changes the answer
    return base


def same_answer(a: weights.Probe, b: weights.Probe, tol: float = 0.0) -> bool:
    """The same greedy tokens, and logprobs equal (CPU, float32: bit for bit) or within tol (GPU kernels)."""
    return a.tokens == b.tokens and max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= tol


def disk_sync_equals_fresh(s: SimpleNamespace, tol: float = 0.0) -> dict:
    """Base back in, then the trainer's same state synced from disk: the answer of the fresh server."""
    put_base_back(s)
    s.cfg.sync = s.eng.cfg.sync = "disk"
    detail, data, pushed = s.run(s.runner.push_full(0))
    after = probe(s)
    assert same_answer(after, s.fresh, tol), (after, s.fresh)  # tokens and every logprob
    assert data["method"] == "disk" and data["bytes"] == s.pushed0["bytes"] == pushed["bytes"] > 0
    assert data["gbps"] > 0 and 0 < data["paused_s"] <= data["transfer_s"] and data["produce_s"] > 0
    assert abs(data["gbps"] - data["bytes"] / data["transfer_s"] / 1e9) < 1e-3
    assert detail.startswith(f"disk: {data['bytes'] / 1e6:.1f} MB in {data['buckets']} bucket(s)")
    ckpt = Path(s.runner.full_dir(0))
    assert {p.name for p in ckpt.iterdir()} >= {"config.json", "tokenizer.json", "model.safetensors.index.json",
                                                 "model-00001-of-00001.safetensors"}
    return data


def train_sync_and_mismatch(s: SimpleNamespace, method: str, synced_max: float = 1e-4, jump: float = 20.0) -> dict:
    """Step 1 trains on the fresh server's rollouts; its merged weights are synced (`method`); step 2's rollouts
    then score near zero against the trainer (the weights arrived), and step 3, rolled out WITHOUT a sync of
    step 2's update, jumps as the `+none` control does. The probe after the sync changed (checked by the
    runner's own check)."""
    from sgtui.events import Train

    put_base_back(s)
    s.cfg.sync = s.eng.cfg.sync = method
    _, _, pushed0 = s.run(s.runner.push_full(0))  # the state the trainer starts from: the initial adapter, merged
    s.runner.probe = probe(s)
    s.run(s.trainer.train(1, rollouts(s, 1)))
    _, data, pushed = s.run(s.runner.push_full(1))
    assert pushed["changed"] and pushed["update_rel"] > weights.PROBE_MIN_REL
    check_probe(s, 1, pushed)  # raises WEIGHT_SYNC if the engine still answers as before
    s.run(s.trainer.train(2, rollouts(s, 2)))
    s.run(s.trainer.train(3, rollouts(s, 3)))  # no sync of step 2's update
    mm = {e.step: e.mismatch for e in s.events if isinstance(e, Train)}
    assert mm[2]["tokens"] == 4 * 16
    assert mm[2]["mean_abs"] < synced_max and abs(mm[2]["k3"]) < synced_max ** 1.5, mm
    assert mm[3]["mean_abs"] > max(1e-3, jump * mm[2]["mean_abs"]), mm
    return data


def unwritten_and_stale_fail(s: SimpleNamespace) -> tuple[EngineError, EngineError]:
    """The controls: a push whose files are not written fails the sync (WEIGHT_SYNC, nothing reaches the
    engine); a reload of the previous step's files reports success and changes nothing, and the probe check
    fails the step."""
    s.cfg.sync = s.eng.cfg.sync = "disk"
    s.trainer.push_extra = {"skip_write": True}
    try:
        with pytest.raises(EngineError) as missing:
            s.run(s.runner.push_full(7))
        stale_dir = s.runner.full_dir(8)
        s.trainer.push_extra = {}
        s.run(s.trainer.train(8, rollouts(s, 8)))
        s.runner.full_dir = lambda step: stale_dir  # every step into one directory: a stale file stays
        s.run(s.runner.push_full(8))
        s.runner.probe = probe(s)
        s.run(s.trainer.train(9, rollouts(s, 9)))
        s.trainer.push_extra = {"skip_write": True}
        _, _, pushed = s.run(s.runner.push_full(9))  # the engine reloads step 8's files: 200, success
        assert pushed["changed"] and not pushed["written"]
        with pytest.raises(EngineError) as stale:
            check_probe(s, 9, pushed)
    finally:
        s.trainer.push_extra = {}
        s.runner.__dict__.pop("full_dir", None)
    return missing.value, stale.value
