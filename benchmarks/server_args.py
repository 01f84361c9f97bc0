"""The options the two client benchmarks share (`client_vs_vllm_bench.py`, `observer_effect.py`): where the one
vLLM server runs (CPU venv or a GPU host's interpreter), its model and memory, the workload's size and a time
budget, with per-device defaults for what a flag leaves unset (a GPU run is sized to keep 64 requests in flight).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping


def add_server_args(ap: argparse.ArgumentParser, *, python_default: str, python_help: str) -> None:
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model", default="", help="model directory (CPU default: sgtui's tiny model)")
    ap.add_argument("--python", default=python_default, help=python_help)
    ap.add_argument("--vllm-url", default="", help="a vLLM server already running (not started or stopped here)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--max-output-tokens", type=int)
    ap.add_argument("--max-input-tokens", type=int)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.4)
    ap.add_argument("--vllm-cache", default="", help="VLLM_CACHE_ROOT of the server (a shared one reuses "
                    "torch.compile's cache across benchmarks); default: a temporary one")
    ap.add_argument("--budget-s", type=float, default=0.0, help="no round may start that would end later than "
                    "this many seconds after this process started (0: no limit)")


def fill_device_defaults(args: argparse.Namespace, defaults: Mapping[str, Mapping[str, object]]) -> None:
    """Whatever the command line left unset (None) takes the device's default."""
    for k, v in defaults[args.device].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
