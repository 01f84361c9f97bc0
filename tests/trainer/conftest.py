"""Shared pieces of the megatron trainer tests: the trainer venv, a tiny GQA model, a fixed batch.

The trainer runs in its own venv (`sgtui setup --cpu`); these tests skip
cleanly only when that venv is missing. The model is made here (2 layers,
hidden 64, 4 query heads over 2 KV groups, so the fused-QKV grouping and the
TP split of KV groups are both exercised) rather than taken from the cache,
so the tests do not wait on setup's tiny model and stay fast on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sgtui.runner.trainer.base import Rollout
from sgtui.runner.trainer.megatron_trainer import default_trainer_python

REPO = Path(__file__).resolve().parents[2]
TRAINER_PY = default_trainer_python("cpu")
needs_trainer = pytest.mark.skipif(not TRAINER_PY, reason="megatron trainer venv missing: run `bash setup/setup.sh` "
                                                          "(or `sgtui setup --cpu`)")


def trainer_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="session")
def tiny_gqa(tmp_path_factory) -> Path:
    if not TRAINER_PY:
        pytest.skip("megatron trainer venv missing")
    out = tmp_path_factory.mktemp("models") / "tiny-gqa"
    subprocess.run([TRAINER_PY, "-m", "sgtui.runner.tinymodel", "--out", str(out), "--layers", "2", "--hidden", "64",
                    "--heads", "4", "--kv-heads", "2", "--intermediate", "128"],
                   check=True, env=trainer_env(), capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_gqa, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-qwen2"
    subprocess.run([TRAINER_PY, str(REPO / "tests" / "trainer" / "make_qwen2.py"), str(out), str(tiny_gqa)],
                   check=True, env=trainer_env(), capture_output=True, timeout=300)
    return out


def fixed_batch() -> list[Rollout]:
    """Two GRPO groups with spread rewards, so every advantage is non-zero."""
    return [
        Rollout("how many apples are left", " seven apples are left in the total", 0, 1.0),
        Rollout("how many apples are left", " the the the the the", 0, 0.0),
        Rollout("how many apples are left", " nine apples", 0, 0.5),
        Rollout("sum of three plus four", " equals seven", 1, 1.0),
        Rollout("sum of three plus four", " nine nine nine nine nine", 1, 0.2),
        Rollout("sum of three plus four", " four plus three is eight", 1, 0.4),
    ]


def trainer_groups(events: list) -> tuple[list[str], list[int]]:
    """(torchrun's start/exit actions in order, the rank groups announced). torchrun starts every rank in a
    process group of its own; each is announced as the trainer's and must have been stopped."""
    from sgtui.events import Proc

    procs = [e for e in events if isinstance(e, Proc) and e.role == "trainer"]
    torchruns = {e.pgid for e in procs if e.action == "start" and "torch.distributed.run" in (e.argv or [])}
    ranks = [e.pgid for e in procs if e.action == "start" and e.pgid not in torchruns]
    assert set(ranks) <= {e.pgid for e in procs if e.action == "exit"}, procs
    return [e.action for e in procs if e.pgid in torchruns], ranks
