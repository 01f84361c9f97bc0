"""Turn engine and trainer log text into an error category and the advice a user needs.

Engines fail with long tracebacks; what a user needs is the one thing that
went wrong and what to do. Patterns are checked in order: the most specific
(OOM, a taken port) before generic import errors, since e.g. an OOM during
import-time kernel warmup also prints an ImportError-like traceback.

These are the rules every engine and the trainer share, and the ones the log
pane marks lines with; an engine's own failure texts (and advice right for
that engine) are laid on top of them in sgtui/runner/errors.py. The runner
imports this inside the engine venvs: standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    category: str
    regex: re.Pattern[str]
    advice: str


def _p(category: str, pattern: str, advice: str) -> Pattern:
    return Pattern(category, re.compile(pattern, re.IGNORECASE), advice)


PATTERNS: list[Pattern] = [
    _p(
        "TP_IMBALANCE",
        r"memory capacity is unbalanced|TP_MEMORY_INBALANCE|memory (is )?imbalanced",
        "GPU memory differs across TP ranks (other processes on some GPUs); free them or set "
        "SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK=0 (SGLang 0.5.x; the older SGL_DISABLE_... name no longer works)",
    ),
    _p(
        "OOM",
        # vLLM v1/core/kv_cache_utils.py (_check_enough_kv_cache_memory); SGLang's pool check
        r"No available memory for the cache blocks|cache is needed, which is larger than the available KV cache|"
        r"Not enough memory\. Please try to increase",
        "the KV cache does not fit in the memory share left after the weights: raise "
        "--gpu-memory-utilization (mem fraction) or lower --max-model-len",
    ),
    _p(
        "OOM",
        r"CUDA out of memory|OutOfMemoryError|torch\.OutOfMemoryError|cudaErrorMemoryAllocation|"
        r"not enough (GPU )?memory|insufficient memory|Cannot allocate memory|out of memory",
        "lower --gpu-memory-utilization / mem fraction, --max-model-len or concurrency, or free the GPU",
    ),
    _p(
        "PORT_IN_USE",
        r"Address already in use|address is already in use|port \d+ is (already )?in use|Errno 98",
        "another process listens on the port: pick another port or stop it",
    ),
    _p(
        "NCCL",
        r"NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|NCCL WARN|ProcessGroupNCCL",
        "NCCL failed: check that the GPUs of the run are visible and not used by another job; NCCL_DEBUG=INFO shows more",
    ),
    _p(
        "MODEL_PATH",
        r"does not appear to have a file named|Repository Not Found|is not a local folder|"
        r"No such file or directory.*(config\.json|model|tokenizer)|Can't load the configuration|"
        r"HFValidationError|not a valid model identifier|OfflineModeIsEnabled|LocalEntryNotFoundError|"
        r"Invalid repository ID|Unrecognized model in|Cannot find any model weights|"
        # vLLM config/model.py: an `architectures` entry neither vLLM nor transformers implements
        r"does not recognize this architecture|are not supported for now",
        "check --model: it must be a local directory with config.json, tokenizer and weights",
    ),
    _p(
        "CONFIG",
        # vLLM config/model.py: --enable-sleep-mode on a platform without it (CPU)
        r"Sleep mode is not supported on current platform",
        "the engine refuses a flag on this platform (e.g. --enable-sleep-mode on CPU): drop it from the extra flags",
    ),
    _p(
        "IMPORT_ERROR",
        r"ModuleNotFoundError|ImportError|undefined symbol|cannot import name",
        "the engine venv is incomplete or has mismatched versions: re-run `sgtui setup`",
    ),
]


def categorize(lines: list[str] | str, default: str = "OTHER") -> tuple[str, str]:
    """(category, advice) for the first matching pattern in the log text."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    for p in PATTERNS:
        if p.regex.search(text):
            return p.category, p.advice
    return default, ""


def failure(lines: list[str], default: str, keep: int = 40) -> tuple[str, str, list[str]]:
    """(category, advice, log tail) for a process that failed.

    The category is read from all of `lines` (a long log: an engine's root cause is often followed by
    dozens of lines of worker teardown), the tail kept for the user is the last `keep` lines, with the
    line that decided the category put first when it lies above them.
    """
    cat, advice = categorize(lines, default)
    tail = list(lines[-keep:])
    if cat != default:
        pattern = next(p for p in PATTERNS if p.category == cat and p.regex.search("\n".join(lines)))
        if not any(pattern.regex.search(line) for line in tail):
            cause = next((line for line in lines if pattern.regex.search(line)), None)
            if cause is not None:
                tail = [cause, "..."] + tail[2:]
    return cat, advice, tail
