"""Another git revision's code beside this tree's, for benchmarks that measure both in one run, alternating.

Why: the 2-core CI VM moves a replay's time by a third from one run to the next (benchmarks/replay_load.py,
2026-12-06: 10.1-12.6 s for one revision within minutes); only numbers taken side by side, in turns, say
what a change did.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def export_tree(rev: str, part: str = "sgtui") -> Path:
    """A temporary directory (removed at exit) holding this tree's sgtui/ with REV's `part` (a path in the
    repository: sgtui/ for all of REV's code, sgtui/tui for its UI on today's core) in its place."""
    d = Path(tempfile.mkdtemp(prefix="sgtui-baseline-"))
    atexit.register(shutil.rmtree, d, True)
    shutil.copytree(ROOT / "sgtui", d / "sgtui", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(d / part)
    got = subprocess.run(["git", "-C", str(ROOT), "archive", rev, part], capture_output=True)
    if got.returncode != 0:
        why = (got.stderr.decode(errors="replace").strip().splitlines() or ["git archive failed"])[-1]
        raise SystemExit(f"--baseline {rev}: not a revision with {part}/ in {ROOT} ({why})")
    archive = got.stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
    return d


def run_child(argv: list[str], tree: Path, name: str, imported: str) -> dict[str, Any]:
    """Run a benchmark's child (`python ARGV...`, from the repository) and read the JSON of its last line,
    refused unless its field `imported` (a module's file) lies under `tree`: the code measured is the tree's.
    Run from the tree, so that a process it starts with `python -m sgtui...` (a large session's read helper)
    imports the tree's code too: run from this repository, REV's replays had run this tree's helper."""
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=str(tree))
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if not Path(out[imported]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{name} imported {out[imported]}, not the code under {tree}")
    return out
