"""One source of defaults: every CLI option whose value ends up in a RunConfig (or ReportOptions) defaults to that
field's default, `--help` shows that value, and the launch form's blank model holds the same values.

The walk is over the CLI's own parameters, so an option added later must be classified here (a run field, an
alias of one, or not a run option) before the suite passes: a new default cannot slip in as a second copy.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import typer.main

from sgtui import cli
from sgtui.config import (BACKENDS, CPU_DEFAULTS, DEFAULT_EXPORTS, DEFAULT_PORTS, DEFAULT_STRATEGY, SESSIONS_DIR,
                          RunConfig, default, defaults)
from sgtui.options import ReportOptions
from sgtui.viewmodel.launch_model import FIELDS, RUN_FIELDS, BackendRow, LaunchOptions

#: CLI options that set a RunConfig field of another name: option -> (field, CLI default -> field value).
ALIASES = {
    "vllm_args": ("extra_args", lambda v: v.split()),
    "sglang_args": ("extra_args", lambda v: v.split()),
}
#: Same-named fields whose option holds text: the CLI default read as the field's type.
AS_FIELD = {"gpus": lambda v: [int(x) for x in v.split(",") if x], "train_gpus": lambda v: [int(x) for x in v.split(",") if x]}
#: Options with no fixed default of their own, each resolved on the run from something else (checked below).
DERIVED = {"model", "trainer", *CPU_DEFAULTS, "vllm_python", "sglang_python", "vllm_url", "sglang_url"}
#: The main command's options that are no RunConfig field (session-level, report options, modes of the command).
NOT_RUN = {"backends", "run", "vllm_port", "sglang_port", "output", "export", "goodput", "allow_mismatch",
           "include_first_step", "log_to", "log_dir", "no_ui", "skip_preflight", "concurrent", "interleave", "detach",
           "version", "install_completion", "show_completion", "help"}


@pytest.fixture(autouse=True)
def no_sgtui_env(monkeypatch):
    """A developer's SGTUI_* defaults must not change what these tests see; wide help, one line per option."""
    for name in list(os.environ):
        if name.startswith("SGTUI_") or name == cli.COMPLETE_VAR:
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "300")


def main_params() -> dict:
    return {p.name: p for p in typer.main.get_command(cli.app).params}


def help_line(flag: str, capsys, argv: tuple[str, ...] = ()) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if re.search(rf"(^|\s){re.escape(flag)}(\s|,|$)", ln)]
    assert lines, f"{flag} not in --help"
    return lines[0]


def test_every_main_option_is_classified():
    fields = set(defaults())
    unknown = sorted(n for n in main_params() if n not in fields | set(ALIASES) | DERIVED | NOT_RUN)
    assert not unknown, f"classify these options in tests/test_defaults.py: {unknown}"


def test_cli_run_options_default_to_the_run_config_fields():
    run_fields = defaults()
    checked = []
    for name, p in main_params().items():
        if name in DERIVED or name in NOT_RUN:
            continue
        field, convert = ALIASES.get(name, (name, AS_FIELD.get(name, lambda v: v)))
        assert convert(p.default) == run_fields[field], f"--{name.replace('_', '-')}: {p.default!r} vs RunConfig.{field}"
        checked.append(name)
    assert {"tp", "gpu_memory_utilization", "startup_timeout", "host", "seed", "mode", "placement"} <= set(checked)


def test_ports_exports_output_and_report_options_read_their_one_source():
    params = main_params()
    assert params["vllm_port"].default == DEFAULT_PORTS["vllm"] and params["sglang_port"].default == DEFAULT_PORTS["sglang"]
    assert default("port") == DEFAULT_PORTS[BACKENDS[0]]
    assert params["export"].default == ",".join(DEFAULT_EXPORTS)
    group = typer.main.get_command(cli.app)
    commands = {"": group, **group.commands}
    for cname, cmd in commands.items():
        for p in cmd.params:
            if p.name in ("output", "directory"):
                assert str(p.default) == SESSIONS_DIR, (cname, p.name)
            if p.name in ("allow_mismatch", "include_first_step", "log_dir"):
                assert str(p.default) == str(getattr(ReportOptions, p.name)), (cname, p.name)


def test_device_dependent_defaults_and_their_help(capsys):
    """On GPU RunConfig's default, on CPU config.CPU_DEFAULTS; the help spells both, read from there."""
    params = main_params()
    for name, cpu in CPU_DEFAULTS.items():
        assert params[name].default is None  # resolved once the GPU is probed
        assert cli.GPU_DEFAULTS[name] == default(name)
        assert f"[{default(name)}; CPU {cpu}]" in params[name].help, name


def test_help_shows_the_run_config_default(capsys):
    for name in ("tp", "gpu_memory_utilization", "startup_timeout", "sync_bucket_mb", "sim_train_seconds"):
        line = help_line("--" + name.replace("_", "-"), capsys)
        assert f"[default: {default(name)}]" in line, line
    for name, value in (("num_steps", default("num_steps")), ("num_rollouts", default("num_rollouts"))):
        line = help_line("--" + name.replace("_", "-"), capsys)
        assert f"[{value}; CPU {CPU_DEFAULTS[name]}]" in line, line
    assert f"[default: {DEFAULT_PORTS['sglang']}]" in help_line("--sglang-port", capsys)


def test_blank_launch_form_is_the_run_config_defaults():
    blank = LaunchOptions()
    run_defaults = defaults()
    for name in RUN_FIELDS:
        assert getattr(blank, name) == run_defaults[name], name
    assert blank.gpus == blank.train_gpus == "" and run_defaults["gpus"] == run_defaults["train_gpus"] == []
    assert blank.device == run_defaults["device"]
    assert blank.output == SESSIONS_DIR and blank.exports == ",".join(DEFAULT_EXPORTS)
    assert BackendRow().sync == run_defaults["sync"] and BackendRow().port == run_defaults["port"]
    form = LaunchOptions.from_runs([])
    for b in BACKENDS:
        row = form.backends[b]
        assert (row.port, row.sync, row.strategy) == (DEFAULT_PORTS[b], run_defaults["sync"], DEFAULT_STRATEGY[b])
    # every form field that is a RunConfig field is covered above
    assert {f.name for f in FIELDS} & set(run_defaults) <= set(RUN_FIELDS) | {"gpus", "train_gpus"}


def test_blank_launch_form_builds_the_default_run_config():
    form = LaunchOptions.from_runs([])
    form.backends["vllm"].enabled, form.backends["vllm"].python, form.model = True, "/v/python", "/m"
    (run,) = form.to_runs()
    expected = RunConfig(label=run.label, backend="vllm", strategy=DEFAULT_STRATEGY["vllm"], python="/v/python",
                         model="/m", port=DEFAULT_PORTS["vllm"])
    assert run.to_dict() == expected.to_dict()


def test_cli_run_with_no_flags_is_the_run_config_defaults(tmp_path, monkeypatch, capsys):
    """End to end on CPU: the RunConfig the CLI builds from no flags differs from RunConfig's defaults only where
    the CLI must fill a value (which run, which interpreter and model, the device, the CPU limits)."""
    import sgtui.headless

    got: dict = {}
    monkeypatch.setattr(cli, "has_gpu", lambda: False)
    monkeypatch.setattr(sgtui.headless, "run_headless", lambda runs, *a, **k: got.update(runs=runs) or 0)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(SystemExit) as exc:
        cli.main(["--no-ui", "--run", f"vllm@{sys.executable}", "--model", str(model), "--skip-preflight",
                  "-o", str(tmp_path / "s")])
    assert (exc.value.code or 0) == 0, capsys.readouterr().err
    (run,) = got["runs"]
    filled = {"label", "backend", "strategy", "python", "model", "model_id", *CPU_DEFAULTS}
    d = run.to_dict()
    differs = {k for k, v in defaults().items() if d[k] != v}
    assert differs <= filled, {k: (d[k], default(k)) for k in differs - filled}
    assert {k: d[k] for k in CPU_DEFAULTS} == CPU_DEFAULTS
    assert Path(run.model) == model


def test_env_defaults_still_override(tmp_path, monkeypatch, capsys):
    """SGTUI_* still beats the RunConfig default of an option whose default now comes from there."""
    import sgtui.headless

    got: dict = {}
    monkeypatch.setattr(cli, "has_gpu", lambda: False)
    monkeypatch.setattr(sgtui.headless, "run_headless", lambda runs, *a, **k: got.update(runs=runs) or 0)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    monkeypatch.setenv("SGTUI_GPU_MEMORY_UTILIZATION", "0.5")
    monkeypatch.setenv("SGTUI_VLLM_PORT", "9100")
    monkeypatch.setenv("SGTUI_STARTUP_TIMEOUT", "30")
    monkeypatch.setenv("SGTUI_MAX_INPUT_TOKENS", "77")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--no-ui", "--run", f"vllm@{sys.executable}", "--model", str(model), "--skip-preflight",
                  "-o", str(tmp_path / "s")])
    assert (exc.value.code or 0) == 0, capsys.readouterr().err
    (run,) = got["runs"]
    assert (run.gpu_memory_utilization, run.port, run.startup_timeout, run.max_input_tokens) == (0.5, 9100, 30.0, 77)
