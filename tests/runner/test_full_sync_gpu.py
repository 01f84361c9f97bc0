"""`+ipc` full-weight sync on ONE GPU (shared placement), on the REAL servers: vLLM's weight-transfer API with its
IPC backend (packed buckets of CUDA IPC handles) and SGLang's /update_weights_from_tensor (flattened buckets),
the persistent megatron trainer (TP=1, NCCL) handing over its merged weights bucket by bucket; `+disk` beside
it as the baseline. Same cases as the CPU modules (tests/runner/full_sync_cases.py): the engine started fresh
on the trainer's merged checkpoint, the base put back, the same state synced in (the answer of the fresh
server again), then a trained step synced (the next step's logprob mismatch falls back to bf16 noise, the
unsynced one after it jumps). Bytes and GB/s are printed (-s) for both methods.

Skipped cleanly without an NVIDIA GPU or without the engine interpreters. Where things are:
- SGTUI_VLLM_PYTHON / SGTUI_SGLANG_PYTHON: interpreters with the engine AND megatron-core (the trainer runs
  on the runner's interpreter on GPU), e.g. the /tmp/vllm-python and /tmp/sglang-python wrappers that
  benchmarks/gpu/record_rl_loop.sh writes; defaults ~/.cache/sgtui/venvs/{vllm,sglang}/bin/python. A
  backend whose interpreter is missing is skipped alone. vLLM 0.26's IPC receiver imports ray at module
  level: without ray in that interpreter preflight refuses `vllm +ipc` and so does this test (skip, saying so).
- SGTUI_GPU_MODEL: a model directory with safetensors and adapters/initial (default: a ~30M-parameter Llama
  in bf16 with random weights, built by sgtui.runner.tinymodel with the engine's interpreter; seconds).
- SGTUI_SGLANG_GPU_ARGS / SGTUI_VLLM_GPU_ARGS: extra server flags (default none).
Cost: one server start per backend (vLLM ~50-240 s cold, SGLang ~70-110 s), a few seconds of training.

    pytest -p no:xdist -o addopts= -m gpu -s tests/runner/test_full_sync_gpu.py
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sgtui import preflight
from sgtui.config import RunConfig
from sgtui.runner.engines.sglang import SglangEngine
from sgtui.runner.engines.vllm import VllmEngine
from tests.engines import CACHE, marked_processes, port_is_free
from tests.runner import full_sync_cases as fs

REPO = Path(__file__).resolve().parents[2]
PYTHONS = {b: Path(os.environ.get(f"SGTUI_{b.upper()}_PYTHON", str(CACHE / "venvs" / b / "bin" / "python")))
           for b in ("vllm", "sglang")}
ENGINES = {"vllm": (VllmEngine, "sleep2"), "sglang": (SglangEngine, "release")}
#: bf16 on a GPU: the same bytes served fresh and synced give the same greedy tokens; logprobs may differ in the
#: last bits between two kernel launches
LOGPROB_TOL = 1e-2


def _gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.engine,
              pytest.mark.skipif(not _gpu(), reason="no NVIDIA GPU/driver (nvidia-smi -L failed)")]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    if os.environ.get("SGTUI_GPU_MODEL"):
        return Path(os.environ["SGTUI_GPU_MODEL"])
    py = next((p for p in PYTHONS.values() if p.exists()), None)
    if py is None:
        pytest.skip("no engine interpreter (set SGTUI_VLLM_PYTHON / SGTUI_SGLANG_PYTHON)")
    out = tmp_path_factory.mktemp("gpu-model") / "m"
    r = subprocess.run([str(py), "-m", "sgtui.runner.tinymodel", "--out", str(out), "--layers", "4", "--hidden", "512",
                        "--heads", "8", "--kv-heads", "4", "--intermediate", "1024", "--dtype", "bfloat16"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module", params=["sglang", "vllm"])
def srv(request, model, tmp_path_factory):
    backend = request.param
    py = PYTHONS[backend]
    if not py.exists():
        pytest.skip(f"no {backend} GPU interpreter at {py} (set SGTUI_{backend.upper()}_PYTHON)")
    cls, strategy = ENGINES[backend]
    args = shlex.split(os.environ.get(f"SGTUI_{backend.upper()}_GPU_ARGS", ""))
    extra = dict(device="cuda", gpus=[0], train_gpus=[0], dtype="bfloat16", gpu_memory_utilization=0.4,
                 startup_timeout=900.0, server_timeout=300.0, extra_args=args, trainer_python=str(py))
    probe_cfg = RunConfig(label="p", backend=backend, strategy=strategy, sync="ipc", python=str(py), device="cuda",
                          mode="training", trainer="megatron")
    refusal = preflight.sync_refusal(probe_cfg, preflight.sync_facts(str(py), backend))
    # a refused +ipc must not stop the +disk baseline: vLLM would not even start with its IPC backend configured
    s = fs.start(cls, backend, str(py), strategy, "disk" if refusal else "ipc",
                 tmp_path_factory.mktemp(f"fs-gpu-{backend}"), model=model, **extra)
    s.refusal = refusal
    yield s
    fs.stop(s)
    assert port_is_free(s.cfg.port) and marked_processes({s.cfg.label}) == []
    shutil.rmtree(Path(s.cfg.workdir).parent / f"{backend}-cache", ignore_errors=True)


def test_ipc_wire_formats_rebuild_in_another_process():
    """The handles alone, no server: what SGLang and vLLM do with them, in a second process (seconds)."""
    py = next((p for p in PYTHONS.values() if p.exists()), None)
    if py is None:
        pytest.skip("no engine interpreter (set SGTUI_VLLM_PYTHON / SGTUI_SGLANG_PYTHON)")
    r = subprocess.run([str(py), "tests/runner/ipc_wire_check.py"], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0 and "RESULT OK" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_disk_sync_on_gpu_answers_as_served_fresh(srv):
    data = fs.disk_sync_equals_fresh(srv, tol=LOGPROB_TOL)
    print(f"\n{srv.cfg.backend} +disk on GPU: {data['bytes'] / 1e6:.1f} MB in {data['buckets']} bucket(s), "
          f"{data['gbps']:.2f} GB/s, not serving {data['paused_s']:.3f} s (trainer {data['produce_s']:.3f} s)")


def test_ipc_sync_in_buckets_answers_as_served_fresh(srv):
    if srv.refusal:
        pytest.skip(f"preflight refuses it here: {srv.refusal}")
    fs.put_base_back(srv)
    srv.cfg.sync = srv.eng.cfg.sync = "ipc"
    srv.cfg.sync_bucket_mb = 16  # ~60 MB of bf16 weights: several buckets, each acked before the next
    try:
        detail, data, _ = srv.run(srv.runner.push_full(0))
    finally:
        srv.cfg.sync_bucket_mb = 512
    assert fs.same_answer(fs.probe(srv), srv.fresh, LOGPROB_TOL)
    assert data["method"] == "ipc" and data["bytes"] == srv.pushed0["bytes"] and data["buckets"] > 1
    if srv.cfg.backend == "vllm":
        assert data["setup_s"] > 0 and "update_weights x" in detail  # /init_weight_transfer_engine, once
    print(f"\n{srv.cfg.backend} +ipc on GPU: {detail}")


def test_ipc_sync_carries_training(srv):
    if srv.refusal:
        pytest.skip(f"preflight refuses it here: {srv.refusal}")
    data = fs.train_sync_and_mismatch(srv, "ipc", synced_max=5e-2, jump=3.0)
    assert data["changed"] and "setup_s" not in data  # the set-up was paid once, in the first sync
    print(f"\n{srv.cfg.backend} +ipc after a trained step: {data['gbps']:.2f} GB/s, "
          f"not serving {data['paused_s']:.3f} s")
