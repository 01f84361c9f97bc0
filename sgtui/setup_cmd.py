"""`sgtui setup`: make the engine venvs, the CPU trainer venv and the tiny model, from the installed package.

The work is done by the shell scripts shipped in the package (`sgtui/setup_scripts/`, package data); this
module picks which ones to run and with what environment. A checkout's `setup/setup.sh` makes `.venv/` and
then runs `sgtui setup`, so there is one implementation, whatever way sgtui was installed. Everything is
cached under `$SGTUI_CACHE` (default `~/.cache/sgtui`) in directories keyed by version, each with a stamp
written after a successful install: a second run finds them and says `NAME: PATH ready` without installing.

CPU (no NVIDIA GPU, or `--cpu`): `vllm_cpu.sh`, `sglang_cpu.sh` for the chosen engines, then `trainer_cpu.sh`
(megatron-core + torch CPU) and `tiny_model.sh` (the built-in model). GPU with PyPI access (`--gpu`):
`gpu.sh` (venvs `vllm`, `sglang`). Air-gapped GPU hosts install from wheels carried in with
`gpu/install_offline.sh`, which `sgtui setup --gpu` names but does not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sgtui import pkgpath

ENGINES = ("vllm", "sglang")
CPU_SCRIPTS = {"vllm": "vllm_cpu.sh", "sglang": "sglang_cpu.sh"}
#: The engine venvs the CPU scripts make (their version keys; sgtui/cli.py's CPU_VENVS are built from these).
CPU_VENV_NAMES = {"vllm": "vllm-cpu-0.32.0", "sglang": "sglang-cpu-0.5.23"}
#: The CPU trainer venv trainer_cpu.sh makes.
TRAINER_VENV_NAME = "trainer-cpu-mcore0.16.1-torch2.13.0"


class SetupError(Exception):
    """One line for the user."""


def scripts_dir() -> Path:
    """The setup scripts inside this sgtui package (a checkout's `setup/` holds only `setup.sh` and links)."""
    return pkgpath.package_dir() / "setup_scripts"


def offline_hint() -> str:
    return (f"air-gapped GPU host: bash {scripts_dir() / 'gpu' / 'install_offline.sh'} NAME WHEEL_DIR "
            "(wheels of its gpu/NAME-*.txt), then pass the wrapper it prints as --vllm-python/--sglang-python")


def parse_engines(value: str) -> list[str]:
    engines = [e.strip() for e in value.split(",") if e.strip()]
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise SetupError(f"--engines {value!r}: expected a comma list of {', '.join(ENGINES)}")
    return list(dict.fromkeys(engines))


def detect_gpu() -> bool:
    """Whether this host has an NVIDIA GPU, as the main command decides its defaults (NVML)."""
    from sgtui import gpu

    return bool(gpu.list_devices())


def installer() -> str:
    """uv when present, pip otherwise; SGTUI_INSTALLER=uv|pip chooses."""
    chosen = os.environ.get("SGTUI_INSTALLER", "").strip()
    if chosen:
        if chosen not in ("uv", "pip"):
            raise SetupError(f"SGTUI_INSTALLER={chosen!r}: expected uv or pip")
        if chosen == "uv" and not shutil.which("uv"):
            raise SetupError("SGTUI_INSTALLER=uv but uv is not on PATH")
        return chosen
    return "uv" if shutil.which("uv") else "pip"


def plan(engines: list[str], on_gpu: bool) -> list[tuple[str, dict[str, str]]]:
    """The scripts to run, in order, each with the environment it adds."""
    if on_gpu:
        return [("gpu.sh", {"SGTUI_ENGINES": " ".join(engines)})]
    steps: list[tuple[str, dict[str, str]]] = [(CPU_SCRIPTS[e], {}) for e in engines]
    steps.append(("trainer_cpu.sh", {}))
    # The tiny model is built with a Python that has torch + transformers + tokenizers: the vLLM venv (as the
    # checkout's setup always did), else the trainer venv (SGLang's imports transformers' models only beside
    # its CPU layer).
    venv = CPU_VENV_NAMES["vllm"] if "vllm" in engines else TRAINER_VENV_NAME
    model_py = pkgpath.cache_dir() / "venvs" / venv / "bin" / "python"
    steps.append(("tiny_model.sh", {"SGTUI_MODEL_PYTHON": os.environ.get("SGTUI_MODEL_PYTHON", str(model_py))}))
    return steps


def run_setup(engines: list[str], on_gpu: bool, echo: Callable[[str], None], note: Callable[[str], None]) -> None:
    """Run the plan; `echo` gets the scripts' result lines (stdout: `NAME: PATH ready|made`), `note` a header
    and the closing line. Raises SetupError naming the script that failed."""
    bash = shutil.which("bash")
    if not bash:
        raise SetupError("bash not found: the setup scripts are bash scripts")
    where = scripts_dir()
    if not (where / "lib.sh").is_file():
        raise SetupError(f"the setup scripts are missing from this sgtui installation ({where})")
    tool = installer()
    env = dict(os.environ, SGTUI_INSTALLER=tool, SGTUI_CACHE=str(pkgpath.cache_dir()))
    # The tiny-model builder imports sgtui from this package alone, never sgtui's whole site-packages.
    env["SGTUI_CHILD_PYTHONPATH"] = pkgpath.child_pythonpath(os.environ.get("PYTHONPATH", ""))
    note(f"sgtui setup: {'GPU' if on_gpu else 'CPU'}, engines {','.join(engines)}, cache {pkgpath.cache_dir()}, "
         f"installs with {tool} (only what is missing)")
    t0 = time.monotonic()
    for script, extra in plan(engines, on_gpu):
        proc = subprocess.Popen([bash, str(where / script)], env={**env, **extra}, stdout=subprocess.PIPE,
                                text=True)  # stderr (progress, installer output) goes straight to the user's
        assert proc.stdout is not None
        for line in proc.stdout:
            echo(line.rstrip("\n"))
        if proc.wait() != 0:
            raise SetupError(f"{script} failed (exit code {proc.returncode}); its output is above")
    note(f"sgtui setup: done in {time.monotonic() - t0:.1f} s")
    if on_gpu:
        note(f"sgtui setup: {offline_hint()}")
