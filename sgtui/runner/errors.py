"""The engines' own failure texts, laid over the shared rules (sgtui/errors.py) with advice right for the engine.

The shared rules know what any engine or trainer prints (an OOM, a taken
port, a missing model); some failures need an engine's own words to be told
apart, and some generic advice is wrong for one engine. SGLang's: releasing
memory while a request still runs (its scheduler asserts and the server
exits), OOM at resume (torch_memory_saver's own message), resuming what was
not released, the TP memory imbalance check (whose switch was renamed in 0.5),
and the optional-module import notes it logs at every start, which are not the
import error that broke a start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sgtui.errors import categorize
from sgtui.runner.engines.base import parse_version


@dataclass(frozen=True)
class Rule:
    category: str
    regex: re.Pattern[str]
    advice: str


SGLANG_RULES = [
    Rule("SERVER_CRASH", re.compile(r"release_memory_occupation should be called only when server is idle"),
         "memory was released while a request was still running: the server asserts on that and exits"),
    Rule("OOM", re.compile(r"torch_memory_saver.*(OUT_OF_MEMORY|out of memory)", re.IGNORECASE),
         "resuming SGLang's memory failed: the trainer (or another process) still holds GPU memory when the "
         "engine resumes; free it first, or lower --gpu-memory-utilization (SGLang's --mem-fraction-static)"),
    Rule("OOM", re.compile(r"Not enough memory\. Please try to increase --mem-fraction-static"),
         "the KV cache got no memory: raise --gpu-memory-utilization (SGLang's --mem-fraction-static), "
         "or free the GPU"),
    Rule("SERVER_CRASH", re.compile(r"Cannot resume allocation that is not paused|KeyError: '(weights|kv_cache|cuda_graph)'"),
         "memory was resumed that had not been released; the server exits on that"),
]

#: SGLang logs these at every start (optional model files that need CUDA-only modules); they are not the
#: import error that broke a start, so the shared IMPORT_ERROR pattern must not see them.
SGLANG_BENIGN = re.compile(r"Ignore import error when loading|has no attribute '\w+_cpu'")

#: Categories an engine call decides by itself (what was asked and how it failed), whatever the log says.
_DECIDED = ("PORT_IN_USE", "SERVER_TIMEOUT", "CONFIG")


def tp_advice(version: str) -> str:
    """The switch was renamed in 0.5: since then the old `SGL_DISABLE_...=1` is mapped onto the new
    `SGLANG_ENABLE_...` name *with the same value*, which leaves the check on."""
    v = parse_version(version)
    if v and v < (0, 5):
        switch = "SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK=1"
    else:
        switch = ("SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK=0 (SGLang < 0.5: SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK=1; "
                  "from 0.5 that old name keeps the check on)")
    return ("free memory differs across the TP ranks' GPUs (another process on some of them): free those GPUs, "
            f"or skip the check with the engine env {switch}")


def categorize_sglang(lines: list[str] | str, default: str = "OTHER", version: str = "") -> tuple[str, str]:
    """(category, advice): SGLang's own failure texts first, then the shared patterns (sgtui/errors.py)."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    for rule in SGLANG_RULES:
        if rule.regex.search(text):
            return rule.category, rule.advice
    text = "\n".join(line for line in text.splitlines() if not SGLANG_BENIGN.search(line))
    cat, advice = categorize(text, default)
    if cat == "TP_IMBALANCE":
        advice = tp_advice(version)
    return cat, advice


def recategorize_sglang(category: str, advice: str, text: str, version: str = "") -> tuple[str, str]:
    """(category, advice) of an SGLang failure the shared rules categorized as (`category`, `advice`), from
    its message and log `text`: SGLang's own texts (and advice) come first, and its benign start-up import
    notes must not make a crash look like an IMPORT_ERROR. What the call decided itself stays."""
    if category in _DECIDED:
        return category, advice
    for rule in SGLANG_RULES:  # SGLang's own failure texts: their advice replaces the generic one
        if rule.regex.search(text):
            return rule.category, rule.advice
    default = "SERVER_CRASH" if category == "IMPORT_ERROR" else category
    cat, new = categorize_sglang(text, default, version)
    if cat == category and cat != "TP_IMBALANCE" and (advice or not new):
        return category, advice
    return cat, new
