"""The `sgtui` command as typer users expect it: choices that fail while parsing (before any GPU probe,
preflight or engine), `-h`, `python -m sgtui`, help for every option in panels, shell completion,
`SGTUI_*` environment defaults, `ls --json`.

Most tests call `sgtui.cli.main(argv)` in-process (fast, and the functions that would start a run can be
replaced); `python -m sgtui` and the completion protocol run as subprocesses, as a shell would run them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import typer.main

from sgtui import __version__, cli
from sgtui.config import MODES, PLACEMENTS, TRAINER_LAUNCHES, TRAINERS, WORKLOADS, RunConfig
from sgtui.export import FORMATS

REPO = Path(__file__).resolve().parent.parent
SESSION = REPO / "sessions" / "20261123T221841Z-sglang-release.jsonl"


@pytest.fixture(autouse=True)
def no_sgtui_env(monkeypatch):
    """A developer's own SGTUI_* defaults must not change what these tests see."""
    for name in list(os.environ):
        if name.startswith("SGTUI_") or name == cli.COMPLETE_VAR:
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")  # help lines unwrapped, so one flag's help is on one line


@pytest.fixture
def model(tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text('{"model_type": "llama"}')
    return m


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if anything past parsing runs: the GPU probe, preflight or a headless run."""
    def boom(*a, **k):
        raise AssertionError("got past the command line")

    import sgtui.headless
    import sgtui.preflight

    monkeypatch.setattr(cli, "has_gpu", boom)
    monkeypatch.setattr(sgtui.preflight, "run_checks", boom)
    monkeypatch.setattr(sgtui.headless, "run_headless", boom)


@pytest.fixture
def captured_runs(monkeypatch):
    """Stand in for the headless run: record the RunConfigs the CLI built, start nothing."""
    import sgtui.headless

    got: dict = {}

    def fake_run_headless(runs: list[RunConfig], session_path, exports, **kw) -> int:
        got.update(runs=runs, exports=exports, session_path=session_path, **kw)
        return 0

    monkeypatch.setattr(cli, "has_gpu", lambda: False)
    monkeypatch.setattr(sgtui.headless, "run_headless", fake_run_headless)
    return got


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exc.value.code or 0, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sgtui: error: ") and "Traceback" not in err and "╭" not in err, err
    return lines[0]


@pytest.mark.parametrize("flag, bad, allowed", [
    ("--mode", "x", MODES),
    ("--placement", "nope", PLACEMENTS),
    ("--workload", "foo", WORKLOADS),
    ("--trainer", "deepspeed", TRAINERS),
    ("--trainer-launch", "once", TRAINER_LAUNCHES),
])
def test_bad_choice_fails_while_parsing_with_one_line(flag, bad, allowed, tmp_path, capsys, no_run):
    out = tmp_path / "sessions"
    code, _, err = run_main(["--no-ui", flag, bad, "-o", str(out)], capsys)
    line = one_line(err)
    assert code == 2
    assert f"{flag} {bad!r}: expected one of {', '.join(allowed)}" in line
    assert not out.exists()  # no session, nothing written


def test_bad_comma_list_items_name_the_item(tmp_path, capsys, no_run):
    code, _, err = run_main(["--export", "txt,pdf", "-o", str(tmp_path / "s")], capsys)
    assert code == 2 and f"--export 'pdf': expected a comma list of {', '.join(FORMATS)}" in one_line(err)
    code, _, err = run_main(["--backends", "vllm,trtllm"], capsys)
    assert code == 2 and "--backends 'trtllm': expected a comma list of vllm, sglang" in one_line(err)


def test_report_format_choices_come_from_the_export_registry(capsys, monkeypatch):
    code, _, err = run_main(["report", "a.jsonl", "-f", "pdf"], capsys)
    assert code == 2 and f"--format 'pdf': expected one of {', '.join(FORMATS)}" in one_line(err)
    # A format added to the registry is offered by --help without touching the CLI.
    code, out, _ = run_main(["report", "--help"], capsys)
    assert code == 0 and "|".join(FORMATS) in out


def test_bad_choice_from_the_environment_names_the_variable(monkeypatch, capsys, no_run):
    monkeypatch.setenv("SGTUI_PLACEMENT", "diagonal")
    code, _, err = run_main(["--no-ui"], capsys)
    assert code == 2 and "SGTUI_PLACEMENT='diagonal' (--placement): expected one of shared, split" in one_line(err)


def test_a_bad_value_typed_on_the_command_line_does_not_blame_the_env_var(capsys, no_run):
    code, _, err = run_main(["--num-steps", "abc"], capsys)
    line = one_line(err)
    assert code == 2 and "'--num-steps'" in line and "SGTUI_NUM_STEPS" not in line


def test_bad_choice_in_a_subprocess_starts_nothing(tmp_path):
    out = tmp_path / "sessions"
    r = subprocess.run([sys.executable, "-m", "sgtui", "--no-ui", "--workload", "foo", "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=60,
                       env={k: v for k, v in os.environ.items() if not k.startswith("SGTUI_")})
    assert r.returncode == 2, r.stderr
    assert "--workload 'foo': expected one of synthetic, jsonl, multiturn" in one_line(r.stderr)
    assert not out.exists()


def test_python_m_sgtui_version():
    r = subprocess.run([sys.executable, "-m", "sgtui", "--version"], capture_output=True, text=True, cwd=REPO,
                       timeout=60, env={**os.environ, "SGTUI_MODE": "bogus"})  # eager: answers before the rest
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == __version__


def test_help_shows_at_python_literally_and_h_is_help(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    assert "BACKEND:STRATEGY[+SYNC][@PYTHON]" in out  # rich markup would swallow "[@PYTHON]"
    code, out_h, _ = run_main(["-h"], capsys)
    assert code == 0 and out_h == out
    for sub in ("report", "replay", "ls", "attach", "stop", "cleanup"):
        code, out, err = run_main([sub, "-h"], capsys)
        assert code == 0 and f"Usage: sgtui {sub}" in out, (sub, err)


def test_help_has_panels_and_env_vars(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for panel in ("Runs", "Workload", "Engines", "Trainer", "Output", "Reports"):
        assert f"─ {panel} ─" in out, panel
    for var in ("SGTUI_MODEL", "SGTUI_NUM_STEPS", "SGTUI_EXPORT", "SGTUI_OUTPUT", "SGTUI_PLACEMENT"):
        assert f"env var: {var}" in out, var
    assert "<inference|training>" in out and "<shared|split>" in out


def test_every_option_and_argument_has_help():
    group = typer.main.get_command(cli.app)
    commands = [("sgtui", group), *((f"sgtui {n}", c) for n, c in group.commands.items())]
    assert len(commands) >= 7
    missing = [f"{name} {p.name}" for name, c in commands for p in c.params if not (getattr(p, "help", "") or "").strip()]
    assert not missing, missing


def test_every_main_option_panel_and_env_var():
    """Every run option is in a panel; every value option reads SGTUI_<NAME> (but --run: SGTUI_RUN marks
    sgtui's child processes)."""
    group = typer.main.get_command(cli.app)
    general = {"version", "install_completion", "show_completion", "help"}
    for p in group.params:
        if p.name in general:
            continue
        assert getattr(p, "rich_help_panel", None), p.name
        if p.name != "run":
            assert p.envvar == "SGTUI_" + p.name.upper(), p.name


def test_env_defaults_reach_the_run_config(monkeypatch, tmp_path, model, capsys, captured_runs):
    monkeypatch.setenv("SGTUI_MODEL", str(model))
    monkeypatch.setenv("SGTUI_NUM_STEPS", "5")
    monkeypatch.setenv("SGTUI_CONCURRENCY", "3")
    monkeypatch.setenv("SGTUI_WORKLOAD", "multiturn")
    monkeypatch.setenv("SGTUI_SEED", "7")
    monkeypatch.setenv("SGTUI_EXPORT", "md")
    monkeypatch.setenv("SGTUI_OUTPUT", str(tmp_path / "envout"))
    monkeypatch.setenv("SGTUI_NO_UI", "1")
    code, _, err = run_main(["--run", f"vllm@{sys.executable}", "--skip-preflight", "--seed", "9"], capsys)
    assert code == 0, err
    (run,) = captured_runs["runs"]
    assert run.model == str(model) and run.num_steps == 5 and run.concurrency == 3 and run.workload == "multiturn"
    assert run.seed == 9  # the command line wins over the environment
    assert captured_runs["exports"] == ["md"]
    assert Path(captured_runs["session_path"]).parent == tmp_path / "envout"


def test_without_env_the_cpu_defaults_apply(tmp_path, model, capsys, captured_runs):
    code, _, err = run_main(["--no-ui", "--run", f"vllm@{sys.executable}", "--model", str(model), "--skip-preflight",
                             "-o", str(tmp_path / "s")], capsys)
    assert code == 0, err
    (run,) = captured_runs["runs"]
    assert run.num_steps == cli.CPU_DEFAULTS["num_steps"] and run.workload == "synthetic" and run.seed == 0
    assert captured_runs["exports"] == ["txt", "json"]


def test_show_completion_for_the_shell(monkeypatch, capsys):
    import shellingham

    def no_shell(*a, **k):
        raise shellingham.ShellDetectionFailure()

    monkeypatch.setattr(shellingham, "detect_shell", no_shell)  # e.g. CI: no shell in the process tree
    monkeypatch.setenv("SHELL", "/usr/bin/zsh")
    code, out, err = run_main(["--show-completion"], capsys)
    assert code == 0, err
    assert "#compdef sgtui" in out and "_SGTUI_COMPLETE=complete_zsh" in out
    monkeypatch.setenv("SHELL", "/bin/tcsh")
    code, _, err = run_main(["--show-completion"], capsys)
    assert code == 2 and "cannot tell your shell" in one_line(err)


def test_show_completion_subprocess_bash():
    r = subprocess.run([sys.executable, "-m", "sgtui", "--show-completion"], capture_output=True, text=True,
                       cwd=REPO, timeout=60, env={**os.environ, "SHELL": "/bin/bash"})
    assert r.returncode == 0, r.stderr
    # bash from the process tree (the test runner's shell) or from SHELL
    assert "complete -o default -F _sgtui_completion sgtui" in r.stdout and "_SGTUI_COMPLETE" in r.stdout


def test_install_completion_writes_to_the_shell_rc(tmp_path, monkeypatch, capsys):
    import shellingham

    monkeypatch.setattr(shellingham, "detect_shell", lambda *a, **k: ("bash", "/bin/bash"))
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, err = run_main(["--install-completion"], capsys)
    assert code == 0, err
    script = tmp_path / ".bash_completions" / "sgtui.sh"
    assert "bash completion installed" in out and "_SGTUI_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def complete(words: str, cword: int) -> list[str]:
    """What bash gets back when it asks sgtui to complete word `cword` of `words` (typer's protocol)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGTUI_")}
    env.update({cli.COMPLETE_VAR: "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    r = subprocess.run([sys.executable, "-m", "sgtui"], capture_output=True, text=True, cwd=REPO, timeout=60,
                       env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_completion_offers_choices_commands_and_keeps_goodput_words():
    assert complete("sgtui --mode ", 2) == list(MODES)
    assert complete("sgtui --export txt,", 2) == [f"txt,{f}" for f in FORMATS if f != "txt"]
    assert complete("sgtui --run sglang:r", 2) == ["sglang:release", "sglang:restart"]
    assert complete("sgtui rep", 1) == ["report", "replay"]
    assert complete("sgtui report x.jsonl --format v", 4) == [f for f in FORMATS if f.startswith("v")]
    # vLLM's several-word --goodput before the word being completed does not derail it
    assert complete("sgtui --goodput ttft:500 tpot:50 --plac", 4) == ["--placement"]


def test_goodput_words_still_join_on_the_command_line(tmp_path, model, capsys, captured_runs):
    code, _, err = run_main(["--no-ui", "--run", f"vllm@{sys.executable}", "--model", str(model), "--skip-preflight",
                             "-o", str(tmp_path / "s"), "--goodput", "ttft:500", "tpot:50", "--seed", "3"], capsys)
    assert code == 0, err
    assert dict(captured_runs["opts"].goodput) == {"ttft": 500.0, "tpot": 50.0}
    assert captured_runs["runs"][0].seed == 3


def test_ls_json(tmp_path, capsys):
    d = tmp_path / "sessions"
    d.mkdir()
    shutil.copy(SESSION, d / SESSION.name)
    (d / "broken.jsonl").write_text("not json\n")
    code, out, err = run_main(["ls", "--json", str(d)], capsys)
    assert code == 0, err
    doc = orjson.loads(out)
    assert doc["directory"] == str(d)
    by_file = {s["file"]: s for s in doc["sessions"]}
    assert set(by_file) == {SESSION.name, "broken.jsonl"}
    ok = by_file[SESSION.name]
    assert ok["status"] == "ok" and ok["runs"] == [{"label": "sglang-release", "status": "ok"}] and ok["pid"] is None
    assert ok["path"] == str(d / SESSION.name) and "verdict" in ok
    assert by_file["broken.jsonl"]["status"] == "unreadable" and by_file["broken.jsonl"]["error"]
    # the same sessions as the human listing, line for line
    code, text, _ = run_main(["ls", str(d)], capsys)
    assert text.splitlines() == [s["line"] for s in doc["sessions"]]


def test_ls_json_directory_from_sgtui_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SGTUI_OUTPUT", str(tmp_path))
    code, out, err = run_main(["ls", "--json"], capsys)
    assert code == 0, err
    assert orjson.loads(out) == {"directory": str(tmp_path), "sessions": []}
