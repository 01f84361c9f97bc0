"""Full-weight sync into the REAL SGLang 0.5.23 CPU server (one server for the module, started fresh on the
trainer's merged weights: tests/runner/full_sync_cases.py), through `+disk` (/update_weights_from_disk) and
`+ipc` (/update_weights_from_tensor with flattened buckets; on CPU the handles name shared-memory files, the
same route and loader as CUDA IPC handles on a GPU). The real megatron trainer (TP=1, gloo) trains on the
server's rollouts in between.
"""

from __future__ import annotations

import pytest

from sgtui.runner.engines.sglang import SglangEngine
from tests.engines import SGLANG_PY, needs_sglang
from tests.runner import full_sync_cases as fs
from tests.trainer.conftest import needs_trainer

pytestmark = [pytest.mark.engine, needs_sglang, needs_trainer]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = fs.start(SglangEngine, "sglang", str(SGLANG_PY), "release", "disk", tmp_path_factory.mktemp("fs-sglang"))
    yield s
    fs.stop(s)


def test_disk_sync_answers_as_the_merged_weights_served_fresh(srv):
    data = fs.disk_sync_equals_fresh(srv)
    assert data["bytes"] == fs.TINY_BYTES and data["buckets"] == 1
    assert "setup_s" not in data  # nothing to set up for SGLang's disk reload
    print(f"\nsglang +disk: {data['bytes'] / 1e6:.1f} MB at {data['gbps']:.3f} GB/s, not serving "
          f"{data['paused_s'] * 1000:.1f} ms (trainer and server started in {srv.startup_s:.0f} s)")


def test_ipc_sync_in_buckets_answers_the_same(srv):
    fs.put_base_back(srv)
    srv.cfg.sync = srv.eng.cfg.sync = "ipc"
    srv.cfg.sync_bucket_mb = 1  # 2.9 MB: three buckets, the cache flushed with the last, each acked
    try:
        detail, data, _ = srv.run(srv.runner.push_full(0))
    finally:
        srv.cfg.sync_bucket_mb = 512
    assert fs.probe(srv) == srv.fresh
    assert data["method"] == "ipc" and data["bytes"] == fs.TINY_BYTES and data["buckets"] == 3
    assert "begin/end_weight_update, update_weights_from_tensor x3 (flattened_bucket)" in detail
    assert data["paused_s"] >= data["load_s"] - 1e-3  # the session spans the trainer's packing too
    print(f"\nsglang +ipc (shared memory): {detail}")


def test_ipc_sync_carries_training_and_the_mismatch_proves_it(srv):
    data = fs.train_sync_and_mismatch(srv, "ipc")
    assert data["changed"] and data["update_rel"] > 0


def test_unwritten_or_stale_weights_fail_the_sync(srv):
    missing, stale = fs.unwritten_and_stale_fail(srv)
    assert missing.category == "WEIGHT_SYNC" and "no safetensors weights" in missing.message
    assert stale.category == "WEIGHT_SYNC" and "did not arrive" in stale.message
    srv.eng.check_alive()  # refused before the call: the server is fine
