"""Runner import isolation (sgtui/pkgpath.py): a child interpreter gets the sgtui package, and nothing else.

The slow test does what a user does: build a wheel of sgtui, `pip install` it (non-editable, with its
dependencies) into a fresh venv of this Python, and make engine-like venvs with their own, older httpx:
one of this Python and, where this machine has one, one of another Python version. The runner's
environment, computed by the installed sgtui's orchestrator, must let each engine interpreter import sgtui
from the installed package and httpx/orjson from its own venv. A control with the old PYTHONPATH (the
directory above the package, i.e. sgtui's site-packages) shows the same probe catching the shadowing.
Everything lives under tmp_path (SGTUI_CACHE included); pip needs its package index.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sgtui import pkgpath

REPO = Path(__file__).resolve().parent.parent
ENGINE_HTTPX = "0.27.2"  # older than sgtui's own (httpx>=0.27 resolves to the newest)

PROBE = """
import json, os, sys
from pathlib import Path
import httpx, orjson, sgtui, sgtui.config, sgtui.pkgpath
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "sgtui": str(Path(sgtui.__file__).resolve()),
    "httpx": str(Path(httpx.__file__).resolve()), "httpx_version": httpx.__version__,
    "orjson": str(Path(orjson.__file__).resolve()),
    "grandchild_path": sgtui.pkgpath.child_pythonpath(os.environ.get("PYTHONPATH")),
}))
"""
ENV_OF_RUNNER = """
import json, sgtui
from sgtui.config import RunConfig
from sgtui.orchestrator import runner_env
env = runner_env(RunConfig(label="iso", backend="vllm", strategy="sleep1"))
print(json.dumps({"sgtui": sgtui.__file__, "env": env}))
"""


def test_child_pythonpath_is_a_directory_with_the_package_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("SGTUI_CACHE", str(tmp_path / "cache"))
    value = pkgpath.child_pythonpath(os.pathsep.join(["/opt/x", "", "/opt/y", "/opt/x"]))
    first, *rest = value.split(os.pathsep)
    assert Path(first).parent == tmp_path / "cache" / "pkgpath"
    assert os.listdir(first) == ["sgtui"] and Path(first, "sgtui").resolve() == REPO / "sgtui"
    assert rest == ["/opt/x", "/opt/y"]
    # A child that computes it again (the runner for its trainer) gets the same directory, not a second entry.
    assert pkgpath.child_pythonpath(value) == value


def test_a_stale_link_is_replaced(tmp_path, monkeypatch):
    """Same package path, link pointing elsewhere (e.g. an old checkout moved away): made right again."""
    monkeypatch.setenv("SGTUI_CACHE", str(tmp_path / "cache"))
    d = Path(pkgpath.child_pythonpath("").split(os.pathsep)[0])
    (d / "sgtui").unlink()
    (d / "sgtui").symlink_to(tmp_path)
    pkgpath._made.clear()
    assert Path(pkgpath.child_pythonpath("").split(os.pathsep)[0], "sgtui").resolve() == REPO / "sgtui"


def test_an_unwritable_cache_falls_back_to_a_private_temporary_directory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SGTUI_CACHE", str(blocker / "cache"))  # below a file: cannot be created
    pkgpath._made.clear()
    first = Path(pkgpath.child_pythonpath("").split(os.pathsep)[0])
    try:
        assert first.name.startswith("sgtui-pkgpath-") and not str(first).startswith(str(blocker))
        assert os.listdir(first) == ["sgtui"] and (first / "sgtui").resolve() == REPO / "sgtui"
    finally:
        shutil.rmtree(first)


def _version(python: str) -> tuple[int, int] | None:
    try:
        r = subprocess.run([python, "-c", "import sys, venv, ensurepip; print(*sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    major, minor = map(int, r.stdout.split())
    return major, minor


def other_python() -> str | None:
    """An interpreter of another Python version (>= 3.10, with venv and ensurepip), 3.12 first (the GPU engine
    venvs' version), or None."""
    here = sys.version_info[:2]
    found: dict[tuple[int, int], str] = {}
    names = [f"python3.{m}" for m in range(10, 16)]
    candidates = [p for n in names if (p := shutil.which(n))]
    candidates += sorted(glob.glob("/usr/bin/python3.[0-9]*")) + sorted(glob.glob("/usr/local/bin/python3.[0-9]*"))
    candidates += sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / "3.*" / "bin" / "python3.[0-9]*")))
    for c in candidates:
        if c.endswith("-config") or not os.access(c, os.X_OK):
            continue
        v = _version(c)
        if v and v != here and v >= (3, 10) and v not in found:
            found[v] = c
    for v in sorted(found, key=lambda v: (v != (3, 12), v)):
        return found[v]
    return None


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=kw.pop("timeout", 180), **kw)
    assert r.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def _pip(python: Path, *args: str) -> None:
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args])


def _venv(base_python: str, where: Path) -> Path:
    _run([base_python, "-m", "venv", str(where)])
    return where / "bin" / "python"


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP") and not k.startswith("SGTUI_")}
    env["SGTUI_CACHE"] = str(tmp_path / "cache")
    return env


@pytest.mark.slow
def test_installed_sgtui_gives_engine_venvs_only_its_package(tmp_path):
    # 1. A wheel of sgtui, built from a copy of the sources (a build writes build/ and *.egg-info beside them).
    src = tmp_path / "src"
    shutil.copytree(REPO / "sgtui", src / "sgtui", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"), str(src)])
    wheel = next((tmp_path / "wheel").glob("sgtui-*.whl"))

    # 2. sgtui installed as users install it: non-editable, with its dependencies, in a fresh venv.
    base = getattr(sys, "_base_executable", sys.executable)
    sg = _venv(base, tmp_path / "sgtui-venv")
    _pip(sg, str(wheel))
    env = _clean_env(tmp_path)
    work = tmp_path / "cwd"  # never the checkout: `-m` puts the cwd first on sys.path
    work.mkdir()
    sg_httpx = _run([str(sg), "-c", "import httpx; print(httpx.__version__)"], env=env, cwd=work).stdout.strip()
    assert sg_httpx != ENGINE_HTTPX
    out = json.loads(_run([str(sg), "-c", ENV_OF_RUNNER], env=env, cwd=work).stdout)
    sg_site = Path(out["sgtui"]).resolve().parent.parent
    assert sg_site.name == "site-packages" and str(sg_site).startswith(str(tmp_path / "sgtui-venv")), out["sgtui"]
    runner_env = out["env"]

    # 3. Engine-like venvs with their own httpx: this Python, and another version where there is one.
    engines = [("same", base)]
    other = other_python()
    if other:
        engines.append(("other", other))
    seen_versions = set()
    for name, python in engines:
        eng = _venv(python, tmp_path / f"engine-{name}")
        _pip(eng, f"httpx=={ENGINE_HTTPX}", "orjson")
        eng_root = str(tmp_path / f"engine-{name}")
        eng_version = _version(str(eng))
        seen_versions.add(eng_version)
        got = json.loads(_run([str(eng), "-c", PROBE], env=runner_env, cwd=work).stdout)
        assert tuple(got["python"]) == eng_version
        assert got["sgtui"].startswith(str(sg_site / "sgtui")), got  # the installed package, via the link
        assert got["httpx"].startswith(eng_root) and got["httpx_version"] == ENGINE_HTTPX, got
        assert got["orjson"].startswith(eng_root), got
        assert got["grandchild_path"] == runner_env["PYTHONPATH"]  # the trainer gets the same single entry

        # Control: the old PYTHONPATH (the directory above the package) shadows the engine's packages.
        old = {**runner_env, "PYTHONPATH": str(sg_site)}
        r = subprocess.run([str(eng), "-c", PROBE], env=old, cwd=work, capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            shadowed = json.loads(r.stdout)
            assert shadowed["httpx_version"] == sg_httpx and shadowed["httpx"].startswith(str(sg_site))
        else:  # another Python: sgtui's compiled modules do not even import there
            assert name == "other", r.stderr[-2000:]
    assert len(seen_versions) == len(engines)
