"""An engine's Python given as an interpreter, a venv directory or an engine executable; errors name the
flag or the exact --run spec."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from sgtui.pythons import PythonError, resolve_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def a_venv(tmp_path_factory) -> Path:
    """A real venv (no pip: seconds) with a console script as pip writes them."""
    d = tmp_path_factory.mktemp("engine") / "venv"
    venv.create(d, with_pip=False, symlinks=True)
    script = d / "bin" / "vllm"
    script.write_text(f"#!{d / 'bin' / 'python'}\nimport sys\nsys.exit(0)\n")
    script.chmod(0o755)
    return d


def test_each_form_resolves_to_the_venvs_interpreter(a_venv):
    py = str(a_venv / "bin" / "python")
    assert resolve_python(str(a_venv), "--vllm-python") == py  # the venv directory
    assert resolve_python(str(a_venv / "bin"), "--vllm-python") == py  # its bin/
    assert resolve_python(str(a_venv / "bin" / "vllm"), "--vllm-python") == py  # the engine's executable
    assert resolve_python(py, "--vllm-python") == py
    # what it resolved to really is that venv's interpreter
    out = subprocess.run([resolve_python(str(a_venv), "x"), "-c", "import sys; print(sys.prefix)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out) == a_venv


def test_errors_name_where_the_value_came_from(a_venv, tmp_path):
    where = f"--run vllm:sleep1@{tmp_path}"
    with pytest.raises(PythonError, match=rf"^{where}: {tmp_path} is a directory without bin/python"):
        resolve_python(str(tmp_path), where)
    with pytest.raises(PythonError, match=r"^--sglang-python: /nope not found \(expected an interpreter"):
        resolve_python("/nope", "--sglang-python")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(PythonError, match="neither a Python interpreter nor a script of a venv"):
        resolve_python(str(text), "--vllm-python")
    env_script = tmp_path / "tool"
    env_script.write_text("#!/usr/bin/env python3\n")  # not tied to a venv: which python would run it is a guess
    with pytest.raises(PythonError):
        resolve_python(str(env_script), "--vllm-python")


def test_cli_names_the_exact_run_spec_and_starts_nothing(tmp_path):
    spec = f"vllm:sleep1@{tmp_path}"
    r = subprocess.run([sys.executable, "-m", "sgtui.cli", "--no-ui", "--run", spec, "--run", "sglang:release",
                        "-o", str(tmp_path / "sessions")], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"sgtui: error: --run {spec}: {tmp_path} is a directory without bin/python (expected an interpreter, "
        "a venv directory or an engine executable of a venv)"]
    assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").iterdir())
