"""The runner is the floor below the core: the core never imports `sgtui.runner`, and the core modules the
runner shares (error rules, child-process markers, the turn protocol) import only the standard library, since
the runner imports them inside the engine venvs, where nothing else of the core's dependencies is installed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "sgtui"
#: Core modules the runner imports (besides events/config, which have their own dependency checks).
SHARED = ("errors.py", "childproc.py", "turns.py")


def imported(path: Path) -> set[str]:
    """Every module name an import statement in the file names (absolute imports only: the package uses no others)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_core_module_imports_the_runner():
    core = [p for p in PKG.rglob("*.py") if PKG / "runner" not in p.parents]
    assert len(core) > 20
    bad = {str(p.relative_to(PKG)): sorted(n for n in imported(p) if n == "sgtui.runner" or
                                           n.startswith("sgtui.runner."))
           for p in core}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_modules_the_runner_shares_need_only_the_standard_library():
    for name in SHARED:
        roots = {n.split(".")[0] for n in imported(PKG / name)} - {"__future__"}
        assert roots <= set(sys.stdlib_module_names), (name, roots - set(sys.stdlib_module_names))


def test_importing_the_core_users_loads_no_runner_module():
    """What the issue named: the log pane, the orchestrator and preflight pulled in runner modules."""
    code = ("import sys, sgtui.tui.widgets.log_pane, sgtui.orchestrator, sgtui.preflight\n"
            "print(sorted(m for m in sys.modules if m.startswith('sgtui.runner')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
