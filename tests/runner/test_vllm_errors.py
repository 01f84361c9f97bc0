"""vLLM log text -> error category and advice, on text recorded from real servers or quoted from vLLM's source.

MODEL_PATH and the sleep-mode refusal were recorded from the real vLLM 0.32.0 CPU server; the CUDA-only
failures (OOM at wake_up, KV cache too small for max_model_len, NCCL) are what vLLM 0.32 prints for them
(messages quoted from vllm/v1/core/kv_cache_utils.py, vllm/v1/engine/core.py and torch), since only a
GPU produces them.
"""

from sgtui.errors import categorize, failure

# Real: vLLM 0.32.0 CPU, --model pointing at a directory that does not exist (an earlier tests/test_faults_vllm.py run)
BAD_MODEL_PATH = [
    '  File "/venv/lib/python3.11/site-packages/vllm/transformers_utils/repo_utils.py", line 301, in get_model_path',
    "    return hf_api().snapshot_download(",
    '  File "/venv/lib/python3.11/site-packages/huggingface_hub/utils/_validators.py", line 133, in validate_repo_id',
    "    raise HFValidationError(",
    "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': "
    "'/tmp/x/no-such-model'. Use `repo_type` argument if needed.",
]

NO_WEIGHTS = [
    "(EngineCore pid=812) ERROR 11-23 21:55:10 [core.py:1138] RuntimeError: Cannot find any model weights with "
    "`/models/tiny-llama-v1-noweights`",
]

# The OOM at wake_up seen with a second process holding the GPU while the engine slept: the engine core
# fails the utility call (core.py _invoke_utility_method logs it) and /wake_up answers a bare 500.
OOM_AT_WAKE_UP = [
    '(APIServer pid=1803) INFO:     127.0.0.1:40210 - "POST /sleep?level=1 HTTP/1.1" 200 OK',
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749] Invocation of wake_up method failed",
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749] Traceback (most recent call last):",
    '(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749]   File "/venv/lib/python3.12/site-packages/vllm/'
    'device_allocator/cumem.py", line 227, in wake_up',
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749]     create_and_map(handle)",
    "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1749] torch.OutOfMemoryError: CUDA out of memory. Tried to "
    "allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.10 GiB is free. Process 2211 has 61.40 GiB "
    "memory in use. Of the allocated memory 14.02 GiB is allocated by PyTorch, and 36.00 MiB is reserved by PyTorch "
    "but unallocated.",
    '(APIServer pid=1803) INFO:     127.0.0.1:40210 - "POST /wake_up HTTP/1.1" 500 Internal Server Error',
]

KV_TOO_SMALL = [
    "(EngineCore pid=4410) ERROR 11-23 22:40:02 [core.py:1138] ValueError: To serve at least one request with the "
    "model's max seq len (32768), (4.00 GiB KV cache is needed, which is larger than the available KV cache memory "
    "(1.73 GiB). Based on the available memory, the estimated maximum model length is 14160. Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` "
    "when initializing the engine.",
]

NO_KV_MEMORY = [
    "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
    "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name).",
]

NCCL = [
    "(Worker_TP1 pid=5120) ERROR 11-23 22:51:13 [multiproc_executor.py:703] torch.distributed.DistBackendError: "
    "NCCL error in: /pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:3690, unhandled cuda error (run with "
    "NCCL_DEBUG=INFO for details), NCCL version 2.27.3",
    "(Worker_TP1 pid=5120) ERROR 11-23 22:51:13 [multiproc_executor.py:703] ncclUnhandledCudaError: Call to CUDA "
    "function failed.",
]

# Real: vLLM 0.32.0 CPU with --enable-sleep-mode (FACTS.md: sleep mode is refused on CPU)
SLEEP_MODE_ON_CPU = [
    '  File "/venv/lib/python3.11/site-packages/vllm/config/model.py", line 657, in __post_init__',
    '    raise ValueError("Sleep mode is not supported on current platform.")',
    "ValueError: Sleep mode is not supported on current platform.",
]

PORT_TAKEN = [
    "(APIServer pid=901) ERROR 11-23 22:58:40 [launcher.py:110] [Errno 98] error while attempting to bind on "
    "address ('127.0.0.1', 8100): address already in use",
]

NO_VLLM = [
    "/usr/bin/python3: Error while finding module specification for 'vllm.entrypoints.openai.api_server' "
    "(ModuleNotFoundError: No module named 'vllm')",
]


def test_each_failure_gets_its_category():
    cases = {
        "MODEL_PATH": [BAD_MODEL_PATH, NO_WEIGHTS],
        "OOM": [OOM_AT_WAKE_UP, KV_TOO_SMALL, NO_KV_MEMORY],
        "NCCL": [NCCL],
        "CONFIG": [SLEEP_MODE_ON_CPU],
        "PORT_IN_USE": [PORT_TAKEN],
        "IMPORT_ERROR": [NO_VLLM],
    }
    for category, texts in cases.items():
        for text in texts:
            assert categorize(text)[0] == category, text[-1]


def test_advice_names_what_to_change():
    assert "--gpu-memory-utilization" in categorize(KV_TOO_SMALL)[1]
    assert "--max-model-len" in categorize(KV_TOO_SMALL)[1]
    assert "--model" in categorize(BAD_MODEL_PATH)[1]
    assert "NCCL_DEBUG" in categorize(NCCL)[1]
    assert "--enable-sleep-mode" in categorize(SLEEP_MODE_ON_CPU)[1]


def test_unknown_text_falls_back_to_the_callers_default():
    tail = ["INFO 11-23 22:00:01 [api_server.py:1900] vLLM API server version 0.32.0", "Killed"]
    assert categorize(tail, "SERVER_CRASH") == ("SERVER_CRASH", "")
    assert categorize("", "STARTUP_TIMEOUT")[0] == "STARTUP_TIMEOUT"


def test_root_cause_above_the_kept_tail_comes_first():
    """A model without weights: the cause is followed by many lines of worker teardown. The category is read
    from the whole log and the kept tail starts with the line that decided it."""
    teardown = [f"(EngineCore pid=812) ERROR [core.py:1138] teardown line {i}" for i in range(80)]
    cat, advice, tail = failure(["starting"] + NO_WEIGHTS + teardown, "SERVER_CRASH")
    assert cat == "MODEL_PATH" and "--model" in advice
    assert len(tail) == 40 and tail[0] == NO_WEIGHTS[0] and tail[1] == "..." and tail[-1] == teardown[-1]
    cat, _, tail = failure(teardown, "SERVER_CRASH")
    assert cat == "SERVER_CRASH" and tail == teardown[-40:]


def test_unknown_architecture_is_a_model_problem():
    # Quoted from vllm/model_executor/models/registry.py and transformers' configuration_auto.py (0.32.0 venv)
    assert categorize(["Value error, Model architectures ['NoSuchArch'] are not supported for now. "])[0] == "MODEL_PATH"
    assert categorize(["The checkpoint you are trying to load has model type `nosucharch` but Transformers does "
                       "not recognize this architecture. This could be because of an "])[0] == "MODEL_PATH"
