"""SGLang log text -> error category and advice, on text recorded from real servers.

The CPU texts were recorded from the real SGLang 0.5.23 CPU server (release while busy, resume of
what was not released, start-up notes). The CUDA texts are what SGLang 0.5.x and torch_memory_saver
print for the failures that only a GPU produces (TP memory check in sglang/srt/distributed/bootstrap.py,
resume OOM in torch_memory_saver's csrc/utils.h + core.cpp).
"""

from sgtui.runner.errors import categorize_sglang

CRASH_TAIL = [
    "[2026-11-23 23:03:17] SIGQUIT received. signum=None, frame=None. It usually means one child failed.",
    "[2026-11-23 23:03:17] Sleeping 5 seconds before crash diagnostics to let GPU activity settle.",
    "nanobind: leaked 4 instances!",
]

RELEASE_BUSY = [
    '[2026-11-23 23:03:17] INFO:     127.0.0.1:54508 - "GET /v1/loads?include=core HTTP/1.1" 200 OK',
    "[2026-11-23 23:03:17] Scheduler hit an exception: Traceback (most recent call last):",
    '  File "/venv/lib/python3.11/site-packages/sglang/srt/managers/scheduler.py", line 2253, in process_input_requests',
    "    output = self._request_dispatcher(recv_req)",
    '  File "/venv/lib/python3.11/site-packages/sglang/srt/managers/scheduler_components/weight_updater.py", '
    "line 339, in release_memory_occupation",
    "    assert self.is_fully_idle(",
    "AssertionError: release_memory_occupation should be called only when server is idle.",
    "",
] + CRASH_TAIL

RESUME_UNRELEASED = [
    '  File "/venv/lib/python3.11/site-packages/sglang/srt/managers/scheduler_components/weight_updater.py", '
    "line 390, in resume_memory_occupation",
    "    self.offload_tags.remove(tag)",
    "KeyError: 'kv_cache'",
    "",
] + CRASH_TAIL

RESUME_OOM_CUDA = [
    '[2026-11-23 22:19:02] INFO:     127.0.0.1:40210 - "POST /resume_memory_occupation HTTP/1.1" 200 OK',
    "[torch_memory_saver.cpp] cu_mem_create has CUDA_ERROR_OUT_OF_MEMORY",
    "[torch_memory_saver.cpp] cudaError error: 2 (out of memory)  file=csrc/core.cpp func=resume line=171",
] + CRASH_TAIL

TP_IMBALANCE_CUDA = [
    "[2026-11-23 22:01:13 TP1] Scheduler hit an exception: Traceback (most recent call last):",
    '  File "/venv/sglang/srt/distributed/bootstrap.py", line 449, in _check_tp_memory_balance',
    "    raise RuntimeError(msg)",
    "RuntimeError: The memory capacity is unbalanced. Some GPUs may be occupied by other processes. "
    "pre_model_load_memory=52.31, local_gpu_memory=78.62, local_gpu_memory * 0.9=70.758",
] + CRASH_TAIL

KV_POOL_TOO_SMALL = [
    "[2026-11-23 22:05:40] Scheduler hit an exception: Traceback (most recent call last):",
    '  File "/venv/sglang/srt/model_executor/pool_configurator.py", line 96, in __post_init__',
    "    raise RuntimeError(msg)",
    "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. "
    "Current value: mem_fraction_static=0.1",
]

#: Printed by every CPU start of SGLang 0.5.23 with the compat layer; harmless.
BENIGN_START = [
    "[2026-11-23 23:02:28] Ignore import error when loading sglang.srt.models.falcon_mamba: cannot import name "
    "'causal_conv1d_fn' from 'sglang.srt.layers.attention.mamba.mamba'",
    "[2026-11-23 23:02:28] Ignore import error when loading sglang.srt.models.grok: '_OpNamespace' 'sgl_kernel' "
    "object has no attribute 'fused_moe_router_cpu'",
    "[2026-11-23 23:02:28] Ignore import error when loading sglang.srt.models.midashenglm: No module named "
    "'torchaudio'",
]


def test_release_while_busy_is_a_crash_with_its_reason():
    cat, advice = categorize_sglang(RELEASE_BUSY)
    assert cat == "SERVER_CRASH" and "request was still running" in advice


def test_resume_without_release_is_a_crash_with_its_reason():
    cat, advice = categorize_sglang(RESUME_UNRELEASED)
    assert cat == "SERVER_CRASH" and "not been released" in advice


def test_oom_at_resume_names_the_trainer():
    cat, advice = categorize_sglang(RESUME_OOM_CUDA)
    assert cat == "OOM" and "trainer" in advice and "resum" in advice


def test_kv_pool_too_small_says_raise_the_fraction():
    cat, advice = categorize_sglang(KV_POOL_TOO_SMALL)
    assert cat == "OOM" and "raise --gpu-memory-utilization" in advice


def test_tp_imbalance_advice_matches_the_version():
    cat, advice = categorize_sglang(TP_IMBALANCE_CUDA, version="0.5.17")
    assert cat == "TP_IMBALANCE"
    # From 0.5 the old SGL_DISABLE_...=1 is copied onto SGLANG_ENABLE_... and keeps the check on.
    assert advice.index("SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK=0") < advice.index("SGL_DISABLE")
    cat, advice = categorize_sglang(TP_IMBALANCE_CUDA, version="0.4.9")
    assert cat == "TP_IMBALANCE" and "SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK=1" in advice
    assert "SGLANG_ENABLE" not in advice


def test_benign_startup_import_notes_are_not_an_import_error():
    assert categorize_sglang(BENIGN_START + CRASH_TAIL, "SERVER_CRASH")[0] == "SERVER_CRASH"
    real = BENIGN_START + ["ModuleNotFoundError: No module named 'sgl_kernel'"]
    assert categorize_sglang(real, "SERVER_CRASH")[0] == "IMPORT_ERROR"


def test_shared_patterns_still_apply():
    assert categorize_sglang(["OSError: [Errno 98] Address already in use"])[0] == "PORT_IN_USE"
    assert categorize_sglang(["torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, "
                              "unhandled cuda error"])[0] == "NCCL"
    assert categorize_sglang(["nothing to see"], "SERVER_CRASH") == ("SERVER_CRASH", "")
