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
    with pytest.raises(PythonError, match=r"notes.txt is not executable \(expected an interpreter"):
        resolve_python(str(text), "--vllm-python")


def test_a_wrapper_that_execs_an_interpreter_is_taken_as_it_is(tmp_path):
    """The offline GPU hosts run engines through wrappers (`/tmp/vllm-python`: a shell script that sets
    PYTHONPATH and execs python3); an `#!/usr/bin/env python3` script is not a venv's either."""
    for name, text in (("vllm-python", f"#!/bin/sh\nexec {sys.executable} \"$@\"\n"),
                       ("tool", "#!/usr/bin/env python3\n")):
        w = tmp_path / name
        w.write_text(text)
        w.chmod(0o755)
        assert resolve_python(str(w), "--vllm-python") == str(w)


def test_cli_names_the_exact_run_spec_and_starts_nothing(tmp_path):
    spec = f"vllm:sleep1@{tmp_path}"
    r = subprocess.run([sys.executable, "-m", "sgtui.cli", "--no-ui", "--run", spec, "--run", "sglang:release",
                        "-o", str(tmp_path / "sessions")], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"sgtui: error: --run {spec}: {tmp_path} is a directory without bin/python (expected an interpreter "
        "(or a wrapper that runs one), a venv directory or an engine executable of a venv)"]
    assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").iterdir())
