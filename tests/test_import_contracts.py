"""The package's import rules, checked on the source: no cycle, the view model free of the UI toolkit,
the core free of the engines, and modules small enough to read.

- every `import` statement under sgtui/ (module level, in functions, under TYPE_CHECKING: all of them)
  forms a graph without a cycle; a cycle is printed module by module;
- the import-linter contracts in pyproject.toml (`[tool.importlinter]`) hold, and they would catch a
  breach (the same contracts on a copy of the tree with one forbidden import each: both broken);
- the core contract lists every module of sgtui but sgtui.runner (a new module cannot slip out of it);
- importing the view model and the state fold in a fresh interpreter loads no textual, rich or torch;
- no module in sgtui/tui/, sgtui/viewmodel/ or the state modules is over 450 lines.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter's own dependency
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "sgtui"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sgtui_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports_with_scope(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, and whether it sits inside a function."""
    out: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The sgtui modules one file imports, anywhere in it (`from pkg import sub` counts as pkg.sub).

    One kind of import is left out: a package's `__init__` loading its own submodules inside a function
    (a registry: `sgtui.export` loads a renderer when a format is asked for). A submodule always runs
    after its package's `__init__` has finished, so that can never meet a half-initialised module; the
    same import at module level is an edge like any other."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node, in_function in _imports_with_scope(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:  # relative: from the package this module is in
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        if is_pkg and in_function:
            targets = [t for t in targets if not t.startswith(name + ".")]
        out.update(t for t in targets if t in known)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = sgtui_modules()
    known = set(mods)
    return {name: imported_modules(path, name, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when there is none (iterative DFS, sorted: stable output)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        color[start] = GREY
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                color[node] = BLACK
                continue
            nxt = todo.pop(0)
            if color[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if color[nxt] == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return []


def test_find_cycle_reports_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_function_level_and_relative_imports_are_edges(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from . import y\ndef g():\n    from sgtui.tui import app\n    import sgtui.z\n")
    known = {"sgtui.w.y", "sgtui.tui.app", "sgtui.z"}
    assert imported_modules(f, "sgtui.w.x", known) == known


def test_a_package_loading_its_submodules_lazily_is_no_edge(tmp_path):
    f = tmp_path / "__init__.py"
    f.write_text("from sgtui.w import a\ndef render():\n    from sgtui.w.b import r\n    from sgtui import z\n")
    known = {"sgtui.w.a", "sgtui.w.b", "sgtui.z"}
    assert imported_modules(f, "sgtui.w", known) == {"sgtui.w.a", "sgtui.z"}


def test_no_import_cycle_in_sgtui():
    graph = import_graph()
    assert "sgtui.tui.app" in graph and graph["sgtui.tui.app"], "the walk found no imports: a broken walk"
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_screens_do_not_import_the_app():
    graph = import_graph()
    screens = [m for m in graph if m.startswith("sgtui.tui.screens.") or m.startswith("sgtui.tui.widgets.")]
    assert screens
    offenders = {m: sorted(graph[m] & {"sgtui.tui.app", "sgtui.tui.run_control"}) for m in screens}
    assert not {m: o for m, o in offenders.items() if o}, "screens reach the app through sgtui.tui.host"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_linter_contracts_hold():
    r = lint_imports(ROOT)
    assert r.returncode == 0 and "2 kept, 0 broken" in r.stdout, r.stdout + r.stderr


def test_import_linter_contracts_catch_a_breach(tmp_path):
    """The same contracts on a copy of sgtui/ with Textual in the view model and torch in a core module
    (inside a function: still an import the core makes)."""
    shutil.copytree(PKG, tmp_path / "sgtui", ignore=shutil.ignore_patterns("__pycache__", "setup_scripts"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "sgtui" / "viewmodel" / "__init__.py", "a") as f:
        f.write("\nfrom textual.widget import Widget  # noqa\n")
    with open(tmp_path / "sgtui" / "fmt.py", "a") as f:
        f.write("\ndef _gpu_tensor():\n    import torch\n    return torch\n")
    r = lint_imports(tmp_path)
    assert r.returncode != 0 and "0 kept, 2 broken" in r.stdout, r.stdout + r.stderr
    assert "sgtui.viewmodel -> textual" in r.stdout and "sgtui.fmt -> torch" in r.stdout, r.stdout


def test_core_contract_lists_every_module_but_the_runner():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = next(c for c in config["contracts"] if c["id"] == "core-no-engines")
    children = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
                if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    expected = {f"sgtui.{c}" for c in children} - {"sgtui.runner"}
    listed = set(core["source_modules"])
    assert listed == expected, (f"add to [tool.importlinter] core-no-engines: {sorted(expected - listed)}; "
                                f"remove: {sorted(listed - expected)}")


def test_view_model_and_state_load_no_ui_toolkit_and_no_torch():
    code = ("import sys\n"
            "import sgtui.viewmodel.hub, sgtui.viewmodel.views, sgtui.viewmodel.launch_model, sgtui.state\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'torch'))\n"
            "print(' '.join(bad))\n"
            "sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"loaded: {r.stdout.strip()} {r.stderr[-2000:]}"


def test_the_sys_modules_check_would_see_textual():
    r = subprocess.run([sys.executable, "-c", "import sys, sgtui.tui.app; "
                        "print('textual' in sys.modules and 'rich' in sys.modules)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "True", r.stderr[-2000:]


def test_no_module_over_450_lines():
    files = [*(PKG / "tui").rglob("*.py"), *(PKG / "viewmodel").rglob("*.py"), *PKG.glob("state*.py"),
             *(PKG / "state").rglob("*.py")]
    assert len(files) > 10
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"
