"""Robustness of what the UI shows (issue 14, Use): a dead run shows `dead`, not `running` forever; gauges
stop showing a live value once their run ended; `sgtui` without engines opens the launch form with
preflight saying what to install (and `--no-ui` still fails in one line)."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from gen_session import generate, write_session
from sgtui import cli, fmt
from sgtui.events import EngineGauges, RunEnd, SessionHeader
from sgtui.tui.app import make_app
from sgtui.tui.screens.launch import LaunchScreen
from sgtui.viewmodel.views import TrackedSession, build_run_view
from sgtui.tui.widgets.metrics_table import MetricsTable
from textual.widgets import Button
from tui_helpers import screen_text, settled, wait_for

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped): nothing answers to it now."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def crashed_session(pid: int) -> list:
    """A session whose sgtui stopped writing in the middle of step 2: no run_end, a phase left open."""
    events = generate(seed=5, steps=3)
    header = dataclasses.replace(events[0], host=socket.gethostname(), pid=pid)
    assert isinstance(header, SessionHeader)
    cut = events[len(events) // 2].t
    return [header] + [e for e in events[1:] if e.t <= cut and not isinstance(e, RunEnd)]


def cell(app, row: str, col: str) -> str:
    return app.screen.query_one(MetricsTable).get_cell(row, col).plain


def replay_at_max(tmp_path, events):
    """`sgtui replay --play --speed max`: these tests read what the end of the recording shows."""
    return make_app("replay", paths=[write_session(tmp_path / "s.jsonl", events)], speed="max", playing=True)


@pytest.mark.parametrize("owner", ["gone", "alive"])
async def test_a_dead_run_shows_dead_not_running(tmp_path, owner):
    pid = dead_pid() if owner == "gone" else os.getpid()  # this very process counts as a live owner
    events = crashed_session(pid)
    app = replay_at_max(tmp_path, events)
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: settled(app, len(events)), what="replay to reach the end")
        await pilot.pause()
        keys = [r.key for r in app.snapshot.runs]
        assert keys
        statuses = {k: cell(app, "status", k) for k in keys}
        if owner == "gone":
            assert set(statuses.values()) == {"dead"}, statuses  # today: "running", forever
            assert all(r.phase == "" for r in app.snapshot.runs)  # no phase goes on growing
            assert app.snapshot.all_ended
            assert any(f"sgtui pid {pid} is gone" in d for d in app.snapshot.dead)
        else:  # a session still being written by a live sgtui: its runs are running, not dead
            assert "dead" not in statuses.values(), statuses
            assert not app.snapshot.dead


async def test_dead_shows_only_at_the_end_of_the_recording(tmp_path):
    """Before the playhead reaches where the file stops, the runs were running at that moment."""
    events = crashed_session(dead_pid())
    app = make_app("replay", paths=[write_session(tmp_path / "s.jsonl", events)])  # opens paused at the start
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.replay is not None
                       and not app.snapshot.replay.loading, what="the recording to load")
        await pilot.pause(0.3)
        assert all(r.status != "dead" for r in app.snapshot.runs)


def _gauged(events: list) -> tuple[str, float]:
    last = [e for e in events if isinstance(e, EngineGauges)][-1]
    return last.run, last.gauges["kv_usage"]


async def test_gauges_go_blank_once_the_run_ended(tmp_path):
    events = generate(seed=3, steps=2)
    assert any(isinstance(e, RunEnd) for e in events)
    app = replay_at_max(tmp_path, events)
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: settled(app, len(events)), what="replay to reach the end")
        await pilot.pause()
        snap = app.snapshot
        assert snap.all_ended
        for r in snap.runs:
            assert r.status == "ok"
            assert r.gauges == {}  # today: the last KV usage, running/waiting, prefix hit rate, as if live
            for row in ("kv", "queue", "prefix"):
                assert cell(app, row, r.key) in (fmt.MISSING, f"{fmt.MISSING}/{fmt.MISSING}"), (row, r.key)
        for g in snap.gpus:
            assert g.devices and all(d.used_mib is None and d.util is None and not d.shares for d in g.devices)
            assert all(any(v is not None for v in d.spark) for d in g.devices)  # the history stays drawn
        assert "util    —" in screen_text(app) or "util —" in screen_text(app)


def test_gauges_are_live_while_the_run_goes_on():
    """The view model: a run in its rollout shows its last gauges; after run_end it shows none."""
    events = generate(seed=3, steps=2)
    run, _ = _gauged(events)
    first_gauge = next(i for i, e in enumerate(events) if isinstance(e, EngineGauges) and e.run == run)
    ts = TrackedSession("s.jsonl")
    for e in events[:first_gauge + 1]:
        ts.apply(e)
    live = build_run_view(run, 0, ts, run, events[first_gauge].t, None)
    assert live.status == "running" and live.gauges["kv_usage"] == events[first_gauge].gauges["kv_usage"]
    dead = build_run_view(run, 0, ts, run, events[first_gauge].t, None, dead=True)
    assert dead.status == "dead" and dead.gauges == {}
    for e in events[first_gauge + 1:]:
        ts.apply(e)
    ended = build_run_view(run, 0, ts, run, events[-1].t, None)
    assert ended.status == "ok" and ended.gauges == {}


# -- `sgtui` with no engines installed ------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_engines(tmp_path, monkeypatch):
    """A CPU machine where `sgtui setup` never ran: an empty sgtui cache."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("SGTUI_CACHE", str(cache))
    monkeypatch.setattr(cli, "CPU_VENVS", {b: cache / "venvs" / n for b, n in cli.CPU_VENV_NAMES.items()})
    monkeypatch.setattr(cli, "GPU_VENVS", {b: cache / "venvs" / b for b in ("vllm", "sglang")})
    monkeypatch.setattr(cli, "TINY_MODEL", cache / "models" / "tiny-llama-v1")
    monkeypatch.setattr(cli, "has_gpu", lambda: False)
    monkeypatch.chdir(tmp_path)
    return cache


async def test_no_engines_opens_the_launch_form_with_what_to_install(no_engines, monkeypatch, capsys):
    import sgtui.tui.app

    launched: list = []

    def fake_run_live(runs, session_path, exports, **kw):
        launched.append((runs, session_path, exports))
        return 0

    monkeypatch.setattr(sgtui.tui.app, "run_live", fake_run_live)
    with monkeypatch.context() as tty:  # a terminal for the CLI; Textual's test driver gets the real streams
        tty.setattr(sys, "stdin", _Tty())
        tty.setattr(sys, "stdout", _Tty())
        with pytest.raises(SystemExit) as e:
            cli.main([])
    err = capsys.readouterr().err
    assert e.value.code == 0 and launched, err  # today: exit 2 before any form, "the default ... is not set up"
    runs, session_path, exports = launched[0]
    assert {r.backend for r in runs} == {"vllm", "sglang"}
    assert all(not Path(r.python).exists() for r in runs)
    app = make_app("launch", runs=runs, session_path=session_path, exports=exports, check_imports=False,
                   use_last_session=False)
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.result is not None,
                       what="the preflight")
        screen = app.screen
        assert not screen.ready and screen.query_one("#start", Button).disabled
        failed = {c.name: c for c in screen.result.checks if not c.ok}  # info lines (GPUs) are apart
        assert {"vllm venv", "sglang venv"} <= set(failed), failed
        for name in ("vllm venv", "sglang venv"):
            assert "not found" in failed[name].message and "sgtui setup" in failed[name].fix
        assert "sgtui setup" in failed["model"].fix  # the built-in tiny model comes with the setup too
        text = screen_text(app)
        assert "sgtui setup" in text
        await pilot.press("ctrl+q")


def test_no_engines_without_ui_fails_in_one_line(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    r = subprocess.run([sys.executable, "-m", "sgtui.cli", "--no-ui", "--output", str(tmp_path / "sessions")],
                       capture_output=True, text=True, cwd=REPO, timeout=120, stdin=subprocess.DEVNULL,
                       env={**os.environ, "SGTUI_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sgtui: error: --vllm-python: the default "), r.stderr
    assert "sgtui setup" in lines[0]
