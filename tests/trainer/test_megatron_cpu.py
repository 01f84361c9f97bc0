"""The real megatron-core trainer on CPU (gloo), driven the way the runner drives it.

Every launch is `python -m torch.distributed.run ... -m sgtui.runner.trainer`
in its own process group, from `MegatronTrainer.train()`. The tiny GQA model
of conftest.py is trained on a fixed batch at TP=1 and TP=2 from the same
initial adapter, so the two must agree; a tiny Qwen2 (q/k/v biases, tied
embeddings) is checked against Hugging Face + PEFT at TP=2.

Tolerances (float32 on CPU): logits of the Hugging Face model with the
exported PEFT adapter vs. the megatron model with its LoRA: max |diff| < 1e-5
(measured ~2e-7 against an adapter effect of ~1); TP=2 vs TP=1: losses and
logits within 1e-5 (measured ~1e-7 and ~4e-7). The merged TP=2 adapter
matches the TP=1 one within 1e-4 absolute after three AdamW updates at lr
1e-2 (measured 2e-6 to 3e-5): AdamW divides each gradient by its own running
RMS, so float rounding differences in near-zero gradient entries (a TP=2
matmul sums in another order) grow to a small fraction of one update (~1e-2
per entry). The merge itself is exact (inside/check_math.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import time
from array import array
from pathlib import Path

import pytest

from sgtui.config import RunConfig
from sgtui.events import Log, Train
from sgtui.runner.trainer.base import TrainerError
from sgtui.runner.trainer.megatron_trainer import MegatronTrainer
from tests.engines import marked_processes
from tests.trainer.conftest import REPO, TRAINER_PY, fixed_batch, needs_trainer, trainer_env, trainer_groups

pytestmark = [needs_trainer, pytest.mark.slow]
TOL = 1e-5
ADAPTER_TOL = 1e-4


def make(model: Path, workdir: Path, label: str, tp: int, **kw) -> RunConfig:
    cfg = RunConfig(label=label, backend="vllm", strategy="sleep1", model=str(model), mode="training",
                    trainer="megatron", device="cpu", tp=tp, learning_rate=1e-2, workdir=str(workdir),
                    initial_adapter=str(model / "adapters" / "initial"), max_input_tokens=64, max_output_tokens=32)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run_steps(cfg: RunConfig, extras: list[dict]) -> tuple[list, list[dict], MegatronTrainer]:
    """Train len(extras) steps on the fixed batch, as the runner does (start, steps, close); the step options
    of step i are extras[i]."""
    events: list = []
    trainer = MegatronTrainer(cfg, events.append, Path(cfg.workdir))

    async def go() -> list[dict]:
        results = []
        try:
            await trainer.start()
            for i, extra in enumerate(extras, 1):
                trainer.job_extra = extra
                await trainer.train(i, fixed_batch())
                results.append(trainer.last_result)
        finally:
            await trainer.close()
        return results

    return events, asyncio.run(go()), trainer


def load_adapter(path: str) -> dict[str, tuple[list[int], array]]:
    """PEFT safetensors read by hand (8-byte header size, JSON header, raw float32): sgtui's venv has no torch."""
    data = (Path(path) / "adapter_model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v
        lo, hi = v["data_offsets"]
        arr = array("f")
        arr.frombytes(data[8 + n + lo:8 + n + hi])
        out[k] = (v["shape"], arr)
    return out


def max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b) and all(a[k][0] == b[k][0] for k in a)
    return max(max(abs(x - y) for x, y in zip(a[k][1], b[k][1])) for k in a)


@pytest.fixture(scope="module")
def tp1(tiny_gqa, tmp_path_factory):
    work = tmp_path_factory.mktemp("tp1")
    t0 = time.monotonic()
    events, results, _ = run_steps(make(tiny_gqa, work, "t-mc-tp1", 1),
                                   [{"inner_steps": 3, "verify_frozen": True, "dump_logits": str(work / "logits.pt")}])
    print(f"\nTP=1 step: {time.monotonic() - t0:.1f} s")
    return work, events, results


@pytest.fixture(scope="module")
def tp2(tiny_gqa, tmp_path_factory):
    work = tmp_path_factory.mktemp("tp2")
    t0 = time.monotonic()
    events, results, _ = run_steps(make(tiny_gqa, work, "t-mc-tp2", 2),
                                   [{"inner_steps": 3, "verify_frozen": True, "dump_logits": str(work / "logits.pt")},
                                    {"kl_coef": 0.1}])
    print(f"\nTP=2, two steps: {time.monotonic() - t0:.1f} s")
    return work, events, results


def test_loss_decreases_on_a_fixed_batch_and_only_the_adapter_changes(tp1):
    _, _, (res,) = tp1
    losses = res["losses"]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], losses
    assert res["base_unchanged"] is True  # every base parameter compared before/after, bit for bit
    assert res["trainable"] == 2 * 8192  # 2 layers x 7 LoRA pairs of rank 8: adapter only


def test_train_event_and_peft_files(tp1):
    work, events, (res,) = tp1
    (train,) = [e for e in events if isinstance(e, Train)]
    assert train.simulated is False and train.step == 1 and train.loss == pytest.approx(res["losses"][0])
    assert train.tokens == res["tokens"] > 0 and train.seconds > 0 and len(train.peak_mib) == 1
    assert train.adapter_path == str(work / "adapters" / "step-1")
    cfg = json.loads((Path(train.adapter_path) / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16 and cfg["peft_type"] == "LORA"
    assert len(load_adapter(train.adapter_path)) == 2 * 7 * 2
    logs = [e.line for e in events if isinstance(e, Log) and e.source == "trainer"]
    assert any(line.startswith("[rank0] ") for line in logs) and any("update 3/3" in line for line in logs)


def test_exported_adapter_in_hf_peft_gives_the_megatron_logits(tp1, tiny_gqa):
    work, _, (res,) = tp1
    out = hf_peft_logits(tiny_gqa, res["adapter"], work / "logits.pt")
    assert out["max_abs_diff"] < TOL, out
    assert out["adapter_effect"] > 1000 * TOL, out  # the adapter really moves the logits


def hf_peft_logits(model: Path, adapter: str, dump: Path) -> dict:
    r = subprocess.run([TRAINER_PY, str(REPO / "tests" / "trainer" / "hf_logits.py"), str(model), adapter, str(dump)],
                       env=trainer_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_qwen2_biases_and_tied_embeddings_at_tp2_match_hf_peft(tiny_qwen2, tmp_path):
    _, (res,), _ = run_steps(make(tiny_qwen2, tmp_path, "t-mc-qwen2", 2),
                             [{"dump_logits": str(tmp_path / "logits.pt"), "verify_frozen": True}])
    assert res["base_unchanged"] is True
    out = hf_peft_logits(tiny_qwen2, res["adapter"], tmp_path / "logits.pt")
    assert out["max_abs_diff"] < TOL and out["adapter_effect"] > 1000 * TOL, out


def test_tp2_agrees_with_tp1_and_its_shards_merge_to_the_tp1_adapter(tp1, tp2):
    _, _, (r1,) = tp1
    work2, _, (r2a, _) = tp2
    assert max(abs(x - y) for x, y in zip(r1["losses"], r2a["losses"])) < TOL, (r1["losses"], r2a["losses"])
    assert max_diff(load_adapter(r1["adapter"]), load_adapter(r2a["adapter"])) < ADAPTER_TOL
    assert r2a["tp"] == 2 and len(r2a["peak_mib"]) == 2 and r2a["base_unchanged"] is True
    d = subprocess.run([TRAINER_PY, "-c", "import sys, torch; a, b = (torch.load(p)['logits'] for p in sys.argv[1:]); "
                        "print(float((a - b).abs().max()))", str(tp1[0] / "logits.pt"), str(work2 / "logits.pt")],
                       env=trainer_env(), capture_output=True, text=True, timeout=120)
    assert float(d.stdout.strip()) < TOL, d.stderr[-2000:]


def test_step_two_continues_in_memory_from_step_one_with_one_launch(tp2):
    work, events, (first, second) = tp2
    assert first["origin"].startswith("initial adapter") and second["origin"] == "in memory since step 1"
    assert second["loss"] < first["losses"][0]  # it starts where three updates of step 1 left the adapter
    trains = [e for e in events if isinstance(e, Train)]
    assert [e.step for e in trains] == [1, 2]
    torchrun, ranks = trainer_groups(events)
    assert torchrun == ["start", "exit"] and len(ranks) == 2  # one torchrun for the run, two ranks
    assert set(trains[0].parts) == {"onload", "update", "export", "offload", "other"}
    assert abs(sum(trains[1].parts.values()) - trains[1].seconds) < 1e-6
    assert not (work / "train" / "state").exists()  # persistent: nothing carried through files
    # step 2 ran with kl_coef 0.1: the adapter differs from the frozen base, so the KL term is positive
    assert second["kl"] > 0 and second["loss"] == pytest.approx(second["pg"] + 0.1 * second["kl"], rel=1e-5)


@pytest.fixture(scope="module")
def per_step(tiny_gqa, tmp_path_factory):
    work = tmp_path_factory.mktemp("per-step")
    events, results, trainer = run_steps(make(tiny_gqa, work, "t-mc-per-step", 1, trainer_launch="per-step"),
                                         [{}, {}])
    return work, events, results, trainer


def test_per_step_launches_carry_the_state_on_disk(per_step, tp1):
    work, events, (first, second), trainer = per_step
    torchrun, ranks = trainer_groups(events)
    assert trainer.launches == 2 and torchrun == ["start", "exit"] * 2 and len(ranks) == 2
    assert first["origin"].startswith("initial adapter") and second["origin"] == "state of step 1"
    assert json.loads((work / "train" / "state" / "meta.json").read_text())["step"] == 2
    trains = [e for e in events if isinstance(e, Train)]
    assert all(t.parts["launch"] > t.parts["update"] for t in trains)  # the cost persistence removes
    # the same first step as the persistent trainer's (same initial adapter, batch and seed)
    assert first["loss"] == pytest.approx(tp1[2][0]["losses"][0], abs=TOL)


def test_state_saved_for_another_lora_config_is_refused(per_step, tiny_gqa):
    work = per_step[0]
    cfg = make(tiny_gqa, work, "t-mc-mismatch", 1, lora_rank=4, lora_alpha=8, trainer_launch="per-step")
    with pytest.raises(TrainerError) as ei:
        run_steps(cfg, [{}])
    e = ei.value
    assert e.category == "CHECKPOINT" and "lora_rank" in e.message and "rank 0" in e.message
    assert any("CheckpointMismatch" in line for line in e.log_tail) and e.advice
    assert marked_processes({"t-mc-mismatch"}) == []


def _rank_pid(label: str, rank: int) -> int | None:
    want = {f"SGTUI_RUN={label}".encode(), f"LOCAL_RANK={rank}".encode()}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = set((d / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if want <= env:
                return int(d.name)
    return None


def test_a_killed_rank_fails_the_step_and_leaves_no_process(tiny_gqa, tmp_path):
    label = "t-mc-kill"
    cfg = make(tiny_gqa, tmp_path, label, 2)
    events: list = []
    trainer = MegatronTrainer(cfg, events.append, tmp_path)

    async def go():
        await trainer.start()  # the persistent trainer is up, offloaded, waiting for its first step
        pid = _rank_pid(label, 1)
        assert pid is not None
        trainer.job_extra = {"inner_steps": 10_000}  # a step that lasts until the kill
        task = asyncio.create_task(trainer.train(1, fixed_batch()))
        await asyncio.sleep(1.0)
        assert not task.done()
        os.kill(pid, signal.SIGKILL)
        return await task

    with pytest.raises(TrainerError) as ei:
        asyncio.run(go())
    e = ei.value
    assert e.category == "TRAINER" and "rank 1" in e.message, e.message
    assert "killed by signal 9" in e.message or "closed its connection" in e.message, e.message
    assert e.log_tail
    assert marked_processes({label}) == []
    torchrun, ranks = trainer_groups(events)
    assert torchrun == ["start", "exit"] and len(ranks) == 2


def test_cancelling_the_step_stops_the_whole_group_promptly(tiny_gqa, tmp_path):
    label = "t-mc-cancel"
    trainer = MegatronTrainer(make(tiny_gqa, tmp_path, label, 2), lambda e: None, tmp_path)

    async def go() -> float:
        await trainer.start()
        trainer.job_extra = {"inner_steps": 10_000}
        task = asyncio.create_task(trainer.train(1, fixed_batch()))
        await asyncio.sleep(1.0)
        assert not task.done()
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    took = asyncio.run(go())
    assert took < 15, took
    assert marked_processes({label}) == []
