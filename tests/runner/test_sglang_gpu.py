"""The `release` strategy frees GPU memory on the REAL SGLang GPU server, and the reload brings the
weights back exactly (greedy output before the release equals the output after the reload).

Skipped cleanly without an NVIDIA GPU or without an SGLang GPU interpreter. Where things are:
- SGTUI_SGLANG_PYTHON: the interpreter (default ~/.cache/sgtui/venvs/sglang/bin/python, from `sgtui setup --gpu`;
  on an air-gapped host, the wrapper that setup/gpu/install_offline.sh writes);
- SGTUI_GPU_MODEL: a model directory with real safetensors (default: a small Llama with random weights
  built on the fly by sgtui.runner.tinymodel; `--load-format dummy` would not do, the reload reads disk);
- SGTUI_SGLANG_GPU_ARGS: extra server flags (default: none, CUDA graphs on, as users run it; they capture
  fine on the H200 with 0.5.17, FACTS.md. The H100 measurements used `--sampling-backend pytorch
  --cuda-graph-backend-decode=disabled --cuda-graph-backend-prefill=disabled`).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sgtui.config import RunConfig
from sgtui.runner.engines.sglang import SglangEngine
from tests.engines import CACHE, free_port, port_is_free
from tests.runner.sglang_adapter_check import greedy

REPO = Path(__file__).resolve().parents[2]
PY = Path(os.environ.get("SGTUI_SGLANG_PYTHON", str(CACHE / "venvs" / "sglang" / "bin" / "python")))
ARGS = shlex.split(os.environ.get("SGTUI_SGLANG_GPU_ARGS", ""))
GIB = 1024**3


def _gpu() -> bool:
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.gpu, pytest.mark.engine,
    pytest.mark.skipif(not _gpu(), reason="no NVIDIA GPU/driver (nvidia-smi -L failed)"),
    pytest.mark.skipif(not PY.exists(), reason=f"no SGLang GPU interpreter at {PY} (set SGTUI_SGLANG_PYTHON)"),
]


def used_bytes(index: int = 0) -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used
    finally:
        pynvml.nvmlShutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    if os.environ.get("SGTUI_GPU_MODEL"):
        return os.environ["SGTUI_GPU_MODEL"]
    out = tmp_path_factory.mktemp("gpu-model") / "m"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([str(PY), "-m", "sgtui.runner.tinymodel", "--out", str(out), "--layers", "4", "--hidden", "512",
                        "--heads", "8", "--kv-heads", "8", "--intermediate", "1024", "--dtype", "bfloat16"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return str(out)


def test_release_frees_memory_and_reload_restores_weights(tmp_path, model):
    cfg = RunConfig(label="sg-gpu", backend="sglang", strategy="release", sync="none", python=str(PY), model=model,
                    device="cuda", port=free_port(), gpu_memory_utilization=0.5, dtype="bfloat16",
                    max_input_tokens=64, max_output_tokens=32, workdir=str(tmp_path), startup_timeout=900.0,
                    server_timeout=300.0, extra_args=ARGS)
    eng = SglangEngine(cfg, lambda e: None, tmp_path)
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    floor = used_bytes()
    try:
        run(eng.start())
        _, before = run(greedy(eng, "policy", "the model reads a question and", 16))
        held = used_bytes()
        t = time.perf_counter()
        detail = run(eng.offload())
        release_s = time.perf_counter() - t
        time.sleep(1.0)
        released = used_bytes()
        t = time.perf_counter()
        reload_detail = run(eng.reload(None))
        reload_s = time.perf_counter() - t
        back = used_bytes()
        _, after = run(greedy(eng, "policy", "the model reads a question and", 16))
    finally:
        run(eng.stop())
        run(eng.aclose())
        loop.close()
    gib = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
    print(f"\nsglang {eng.server_version}: floor {gib(floor)}, serving {gib(held)}, released {gib(released)} "
          f"({release_s:.2f} s: {detail}), after reload {gib(back)} ({reload_s:.2f} s: {reload_detail})")
    engine_mem = held - floor
    assert engine_mem > 2 * GIB
    assert held - released > 0.8 * engine_mem  # the memory saver really gave the memory back
    assert back - floor > 0.9 * engine_mem
    assert after == before  # weights reloaded from disk, KV cache usable again
    assert port_is_free(cfg.port)
    shutil.rmtree(tmp_path / "sglang-cache", ignore_errors=True)
