"""What the launch form's preflight panel shows: `sgtui.preflight`'s checks, engine versions, GPUs.

Contract: `default_preflight(runs, output, check_imports)` does the IO (ports, venvs, imports the
engines in their venvs, lists GPUs and leftover servers) and returns a `PreflightResult`; the
launch screen calls it from a worker thread and only draws the result. Lines are
`sgtui.preflight.Check` itself (no copy of it here): `checks` gate Start, `info` lines (the GPU
list) are shown and never block. No Textual, no rich: the result can be tested without a screen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgtui.config import RunConfig
from sgtui.preflight import Check


@dataclass
class PreflightResult:
    """One preflight of the form's values. `error`: the preflight itself failed (shown, blocks Start)."""

    checks: list[Check] = field(default_factory=list)
    info: list[Check] = field(default_factory=list)
    leftovers: list[Any] = field(default_factory=list)  # preflight.Leftover: servers earlier runs left
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.checks)

    def reason(self) -> str:
        """Why Start is blocked, with the fix, in one line ('' when it is not)."""
        if self.error:
            return self.error
        for c in self.checks:
            if not c.ok:
                return f"{c.name}: {c.message}" + (f" → {c.fix}" if c.fix else "")
        return ""


# Importing vLLM takes seconds: an engine's version is looked up once per (python, backend, device) and
# kept while it imports; a failure is looked up again (the user may be fixing the venv meanwhile).
_engine_versions: dict[tuple[str, str, str], tuple[bool, str]] = {}
_versions_lock = threading.Lock()


def engine_checks(runs: list[RunConfig]) -> list[Check]:
    """One line per engine venv the runs use: does it import, and which version (cached when it does)."""
    from sgtui import preflight

    out: list[Check] = []
    seen: set[tuple[str, str, str]] = set()
    for r in runs:
        key = (r.python, r.backend, r.device)
        if key in seen or not Path(r.python).exists():
            continue
        seen.add(key)
        with _versions_lock:
            cached = _engine_versions.get(key)
        if cached is None:
            cached = preflight.engine_version(r.python, r.backend, r.device)  # imports as the runner will
            if cached[0]:
                with _versions_lock:
                    _engine_versions[key] = cached
        ok, what = cached
        out.append(Check(f"{r.backend} venv", ok, f"{r.backend} {what}" if ok else f"cannot import {r.backend}: {what}",
                         "" if ok else "re-run `sgtui setup`"))
    return out


def gpu_lines() -> list[Check]:
    """The GPUs and their free memory, or why none is seen (then runs go on CPU): shown, never blocking."""
    from sgtui import gpu

    devices = gpu.list_devices()
    if not devices:
        return [Check("GPUs", True, f"{gpu.nvml_error() or 'none'}: runs on CPU, memory not measured")]
    return [Check(f"GPU {d.index}", True, f"{d.name}: {d.free_mib / 1024:.1f} of {d.total_mib / 1024:.1f} GiB free")
            for d in devices]


def default_preflight(runs: list[RunConfig], output: str, check_imports: bool = True) -> PreflightResult:
    """sgtui.preflight's checks, engine versions (when check_imports), GPUs and leftover servers."""
    from sgtui import preflight

    checks = list(preflight.run_checks(runs, Path(output), check_imports=False))
    if check_imports:
        checks += engine_checks(runs)
    return PreflightResult(checks, gpu_lines(), preflight.find_leftovers())
