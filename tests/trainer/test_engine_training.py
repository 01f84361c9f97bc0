"""Training mode end to end on the REAL vLLM CPU server: rollouts -> megatron GRPO step -> LoRA hot-load.

`python -m sgtui.runner` (in the vLLM venv, as the orchestrator starts it)
runs 2 steps with `mode=training trainer=megatron`: each step's rollouts are
trained on by torchrun + megatron-core in the trainer venv, and the exported
PEFT adapter is loaded into the running server over /v1/load_lora_adapter;
the next rollout is served by it.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import pytest

from sgtui.config import RunConfig
from sgtui.events import Log, Phase, Request, RunEnd, Train, decode
from tests.engines import TINY, VLLM_PY, free_port, marked_processes, needs_vllm, port_is_free
from tests.trainer.conftest import REPO, needs_trainer

pytestmark = [pytest.mark.engine, pytest.mark.slow, needs_vllm, needs_trainer]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("vllm-megatron")
    cfg = RunConfig(label="t-vllm-megatron", backend="vllm", strategy="sleep1", sync="lora", mode="training",
                    trainer="megatron", python=str(VLLM_PY), model=str(TINY), port=free_port(),
                    workdir=str(base / "run"), initial_adapter=str(TINY / "adapters" / "initial"),
                    num_steps=2, num_rollouts=4, concurrency=4, group_size=2, max_input_tokens=32,
                    max_output_tokens=16, warmup_requests=1, scrape_interval=0.5, startup_timeout=300.0,
                    learning_rate=1e-3)
    t0 = time.monotonic()
    p = subprocess.run([str(VLLM_PY), "-m", "sgtui.runner", "--config", cfg.to_json()], capture_output=True,
                       timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=base, start_new_session=True)
    events = [decode(x, i) for i, x in enumerate(p.stdout.splitlines(), 1)]
    print(f"\nvLLM CPU + megatron trainer, 2 steps: {time.monotonic() - t0:.0f} s")
    return cfg, events, p.returncode


def of(events, cls, **kw):
    return [e for e in events if isinstance(e, cls) and all(getattr(e, k) == v for k, v in kw.items())]


def test_run_ends_ok_with_two_real_train_steps(run):
    cfg, events, rc = run
    assert rc == 0 and of(events, RunEnd)[-1].status == "ok", [e for e in events if e.kind == "error"]
    trains = of(events, Train)
    assert [t.step for t in trains] == [1, 2] and not any(t.simulated for t in trains)
    assert all(math.isfinite(t.loss) and t.tokens > 0 and t.peak_mib for t in trains)
    for t in trains:
        assert (Path(t.adapter_path) / "adapter_model.safetensors").exists()
    ends = {(e.step, e.name): e for e in of(events, Phase, edge="end")}
    assert ends[(1, "train")].detail == "megatron" and ends[(2, "train")].ok
    assert of(events, Log, source="trainer")  # the ranks' logs came through


def test_trained_adapter_is_loaded_and_serves_the_next_rollout(run):
    cfg, events, _ = run
    syncs = {e.step: e for e in of(events, Phase, name="weight_sync", edge="end")}
    assert syncs[1].ok and syncs[2].ok, syncs
    step2 = of(events, Request, step=2)
    assert step2 and all(not r.error for r in step2)
    assert {r.served_model for r in step2} != {cfg.served_model_name}  # an adapter answered, not the base


def test_no_process_left(run):
    cfg, _, _ = run
    assert marked_processes({cfg.label}) == []
    assert port_is_free(cfg.port)
