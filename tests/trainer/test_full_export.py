"""The megatron trainer's full-weight export (`push`: the LoRA merged, HF layout, TP shards gathered).

The layout itself is checked in the trainer venv (inside/check_hf_export.py: every tensor of a GQA and a
Qwen2 checkpoint through the loader's TP slicing and back, bit for bit, at TP=1 and TP=2). Here the real
persistent trainer pushes its initial state at TP=1 and at TP=2 (gloo all-gathers of every sharded
parameter): the two checkpoints must be the same bytes, and an IPC push at TP=2 hands one payload per rank
per bucket, each acked before the next bucket is packed. What the engines make of these is
tests/runner/test_full_sync_{vllm,sglang}.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from sgtui.config import RunConfig
from sgtui.runner.trainer.megatron_trainer import MegatronTrainer
from tests.engines import marked_processes
from tests.trainer.conftest import REPO, TRAINER_PY, needs_trainer, trainer_env

pytestmark = [needs_trainer]


def test_layout_and_merge_checks_in_the_trainer_venv(tiny_gqa, tiny_qwen2):
    r = subprocess.run([TRAINER_PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-o", "addopts=",
                        "tests/trainer/inside/check_hf_export.py"], cwd=REPO,
                       env={**trainer_env(), "SGTUI_TEST_MODEL": str(tiny_gqa), "SGTUI_TEST_QWEN2": str(tiny_qwen2)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "8 passed" in r.stdout


def push_initial(model: Path, work: Path, label: str, tp: int, fmt: str, bucket_mb: int = 512) -> tuple[dict, list]:
    cfg = RunConfig(label=label, backend="sglang", strategy="release", sync="disk" if fmt == "disk" else "ipc",
                    model=str(model), mode="training", trainer="megatron", device="cpu", tp=tp, workdir=str(work),
                    initial_adapter=str(model / "adapters" / "initial"), sync_bucket_mb=bucket_mb)
    cfg.validate()
    trainer = MegatronTrainer(cfg, lambda e: None, work)
    buckets: list = []

    async def on_bucket(msg: dict) -> None:
        buckets.append(msg)

    async def go() -> dict:
        try:
            await trainer.start()
            return await trainer.push(0, fmt, str(work / "ckpt"), on_bucket if fmt != "disk" else None)
        finally:
            await trainer.close()

    return asyncio.run(go()), buckets


@pytest.mark.slow
def test_tp2_push_writes_the_same_checkpoint_as_tp1(tiny_gqa, tmp_path):
    one, _ = push_initial(tiny_gqa, tmp_path / "tp1", "t-fe-tp1", 1, "disk")
    two, _ = push_initial(tiny_gqa, tmp_path / "tp2", "t-fe-tp2", 2, "disk")
    assert one["bytes"] == two["bytes"] > 0 and one["changed"] and two["changed"]
    assert one["digest"] == two["digest"]
    shard = "model-00001-of-00001.safetensors"
    assert (tmp_path / "tp1" / "ckpt" / shard).read_bytes() == (tmp_path / "tp2" / "ckpt" / shard).read_bytes()
    index = json.loads((tmp_path / "tp2" / "ckpt" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {shard} and len(index["weight_map"]) == 2 + 2 * 9 + 1
    assert (tmp_path / "tp2" / "ckpt" / "config.json").read_text() == (tiny_gqa / "config.json").read_text()
    assert not list(tmp_path.glob("*/ckpt.partial-*"))
    assert marked_processes({"t-fe-tp1", "t-fe-tp2"}) == []


@pytest.mark.slow
def test_tp2_ipc_push_sends_one_payload_per_rank_per_bucket(tiny_gqa, tmp_path):
    pushed, buckets = push_initial(tiny_gqa, tmp_path, "t-fe-ipc", 2, "sglang", bucket_mb=1)
    assert len(buckets) == pushed["buckets"] > 1 and [b["last"] for b in buckets][-1] is True
    assert not any(b["last"] for b in buckets[:-1])
    assert sum(b["bytes"] for b in buckets) == pushed["bytes"] and all(b["bytes"] <= 1 << 20 for b in buckets)
    assert all(len(b["payloads"]) == 2 and b["payloads"][0] != b["payloads"][1] for b in buckets)
    assert not (tmp_path / "ckpt").exists()  # handles, not files


def _rank_pid(label: str, rank: int) -> int | None:
    want = {f"SGTUI_RUN={label}".encode(), f"LOCAL_RANK={rank}".encode()}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if want <= set((d / "environ").read_bytes().split(b"\0")):
                    return int(d.name)
            except OSError:
                continue
    return None


@pytest.mark.slow
def test_a_hung_rank_is_a_weight_sync_timeout_and_leaves_no_process(tiny_gqa, tmp_path):
    """Rank 1 stopped (SIGSTOP) before a push: rank 0 waits in the all-gather forever. The runner stops
    waiting after --startup-timeout, stops the whole group (a stopped rank is SIGKILLed after the grace)
    and reports WEIGHT_SYNC; nothing of the trainer survives."""
    import os
    import signal
    import time

    from sgtui.runner.trainer.base import TrainerError

    label = "t-fe-hang"
    cfg = RunConfig(label=label, backend="vllm", strategy="sleep1", sync="disk", model=str(tiny_gqa), mode="training",
                    trainer="megatron", device="cpu", tp=2, workdir=str(tmp_path), startup_timeout=120.0)
    trainer = MegatronTrainer(cfg, lambda e: None, tmp_path)

    async def go() -> float:
        await trainer.start()
        pid = _rank_pid(label, 1)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        cfg.startup_timeout = 3.0
        t = time.monotonic()
        try:
            await trainer.push(1, "disk", str(tmp_path / "ckpt"))
        finally:
            took = time.monotonic() - t
            await trainer.close()
        return took

    with pytest.raises(TrainerError) as ei:
        asyncio.run(go())
    e = ei.value
    assert e.category == "WEIGHT_SYNC" and "within 3 s" in e.message and "stopped" in e.advice
    assert marked_processes({label}) == []
    assert not (tmp_path / "ckpt").exists()
