"""What a user may pass as an engine's Python: an interpreter, a venv directory, or an executable of the
engine (`/opt/vllm/bin/vllm`), each resolved here to the interpreter the runner starts with.

Why: `@/opt/venvs/vllm` (a venv directory) used to end in "Permission denied" when the orchestrator tried
to execute a directory, and a bad `@PYTHON` inside `--run` was blamed on `--vllm-python`. Every error
names where the value came from (`--run vllm:sleep1@/x` or `--vllm-python`) and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPECTED = "an interpreter (or a wrapper that runs one), a venv directory or an engine executable of a venv"


class PythonError(ValueError):
    """One line for the user, naming the flag or run spec the value came from."""


def _is_python(p: Path) -> bool:
    return p.name.startswith("python")


def _shebang_python(p: Path) -> Path | None:
    """The interpreter of a console script (pip writes `#!/venv/bin/python` as its first line)."""
    try:
        with p.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:  # `#!/usr/bin/env python3`: not a venv's own
        return None
    cand = Path(words[0])
    return cand if _is_python(cand) and cand.exists() else None


def resolve_python(value: str, where: str) -> str:
    """The interpreter `value` stands for; PythonError naming `where` when it is none of the expected forms."""
    p = Path(value).expanduser()
    if not p.exists():
        raise PythonError(f"{where}: {value} not found (expected {EXPECTED})")
    if p.is_dir():
        for cand in (p / "bin" / "python", p / "python"):  # a venv, or its bin/
            if cand.exists():
                return str(cand)
        raise PythonError(f"{where}: {value} is a directory without bin/python (expected {EXPECTED})")
    py = None if _is_python(p) else _shebang_python(p)
    if py is not None:  # a console script of a venv (`bin/vllm`): it cannot stand in for its interpreter
        return str(py)
    if not os.access(p, os.X_OK):
        raise PythonError(f"{where}: {value} is not executable (expected {EXPECTED})")
    return str(p)  # an interpreter, or a wrapper that execs one (the offline GPU hosts' /tmp/vllm-python)
