"""Full-weight sync into the REAL vLLM 0.32 CPU server (one server for the module, started fresh on the
trainer's merged weights: tests/runner/full_sync_cases.py) through `+disk`: every worker reloads from the
trainer's checkpoint (/collective_rpc reload_weights with a weights_path), then /reset_prefix_cache. The real
megatron trainer (TP=1, gloo) trains on the server's rollouts in between. `+ipc` needs CUDA in vLLM (its
receiver rebuilds CUDA tensors): tests/runner/test_full_sync_gpu.py.
"""

from __future__ import annotations

import pytest

from sgtui.runner.engines.vllm import VllmEngine
from tests.engines import VLLM_PY, needs_vllm
from tests.runner import full_sync_cases as fs
from tests.trainer.conftest import needs_trainer

pytestmark = [pytest.mark.engine, needs_vllm, needs_trainer]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = fs.start(VllmEngine, "vllm", str(VLLM_PY), "sleep1", "disk", tmp_path_factory.mktemp("fs-vllm"))
    yield s
    fs.stop(s)


def test_disk_sync_answers_as_the_merged_weights_served_fresh(srv):
    data = fs.disk_sync_equals_fresh(srv)
    assert data["bytes"] == fs.TINY_BYTES and data["buckets"] == 1
    assert "--weight-transfer-config" not in srv.eng.argv  # only +ipc configures vLLM's transfer engine
    print(f"\nvllm +disk: {data['bytes'] / 1e6:.1f} MB at {data['gbps']:.3f} GB/s, not serving "
          f"{data['paused_s'] * 1000:.1f} ms (trainer and server started in {srv.startup_s:.0f} s)")


def test_disk_sync_carries_training_and_the_mismatch_proves_it(srv):
    data = fs.train_sync_and_mismatch(srv, "disk")
    assert data["changed"] and data["load_s"] > data["paused_s"] > 0  # load_s adds the prefix-cache reset


def test_unwritten_or_stale_weights_fail_the_sync(srv):
    missing, stale = fs.unwritten_and_stale_fail(srv)
    assert missing.category == "WEIGHT_SYNC" and "no safetensors weights" in missing.message
    assert stale.category == "WEIGHT_SYNC" and "did not arrive" in stale.message
    srv.eng.check_alive()  # the missing directory never reached vLLM (it would have lost its weights)
    assert fs.probe(srv).tokens  # and it still serves
