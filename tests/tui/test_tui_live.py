"""Launch -> run -> verdict with the real orchestrator and a scripted stand-in runner (no engine).

The runner (`fake_runner.py`) speaks the runner's stdout protocol and starts
a child process group of its own, so these tests check the real process
handling: every run's groups are gone after a cancel or a quit.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from textual.widgets import Button

from sgtui import fmt
from sgtui.events import Proc, RunStart
from sgtui.export import load_sessions
from sgtui.session import read_session
from sgtui.state import run_summary
from sgtui.tui.app import make_app
from sgtui.tui.screens.dialogs import Choice
from sgtui.tui.screens.launch import LaunchScreen
from sgtui.tui.screens.live import DashboardScreen
from sgtui.tui.screens.verdict import VerdictScreen
from sgtui.tui.widgets.log_pane import LogPanes
from sgtui.tui.widgets.metrics_table import MetricsTable
from tui_helpers import FAKE_RUNNER, fake_runs, group_alive, screen_text, wait_for


def session_of(root: Path) -> Path:
    """Where live_app records its session."""
    return root / "sessions" / "s.jsonl"


def live_app(root, runs, **kw):
    kw.setdefault("check_imports", False)
    return make_app("launch", runs=runs, session_path=session_of(root), runner_prefix=FAKE_RUNNER,
                    orchestrator_kwargs={"grace": 5.0, **kw.pop("orchestrator_kwargs", {})}, **kw)


def hanging_app(root: Path, n: int = 2, **kw):
    """The live app on `n` fake runs whose step-1 rollout never ends: only a stop (cancel, quit, signal) ends
    them, which is what these tests exercise."""
    return live_app(root, fake_runs(root, n=n, env={"FAKE_HANG": "1"}), **kw)


def process_groups(session) -> list[int]:
    """Every process group the session says was started: runners and the groups they announced."""
    events = read_session(session).events
    return [e.pid for e in events if isinstance(e, RunStart)] + [e.pgid for e in events if isinstance(e, Proc)]


def assert_no_group_left(session: Path) -> None:
    """None of the process groups the session recorded is still alive: nothing was orphaned."""
    assert not any(group_alive(g) for g in process_groups(session))


async def in_rollout(pilot, app, timeout: float = 20.0) -> None:
    """Wait until a run is in its rollout phase: from then on it has process groups that a stop must end."""
    await wait_for(pilot, lambda: app.snapshot is not None and any(r.phase == "rollout" for r in app.snapshot.runs),
                   timeout=timeout, what="the first rollout")


async def start(pilot, app) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.ready, what="preflight ok")
    assert not app.screen.query_one("#start", Button).disabled
    await pilot.press("ctrl+r")
    await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the dashboard")


async def test_launch_run_verdict(in_tmp):
    runs = fake_runs(in_tmp, steps=3)
    app = live_app(in_tmp, runs)
    async with app.run_test(size=(160, 45)) as pilot:
        await start(pilot, app)
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen), timeout=60, what="the verdict")
        await wait_for(pilot, lambda: app.snapshot.settled and app.snapshot.all_ended, what="the final snapshot")
        assert app.statuses == {"vllm-sleep1": "ok", "sglang-release": "ok"}
        text = screen_text(app)
        session = session_of(in_tmp)
        assert "sessions/s.jsonl" in text and "sessions/s.txt" in text
        assert all(p.exists() for p in app.export_paths) and len(app.export_paths) == 2
        headline = load_sessions([session])
        from sgtui.export import combined

        assert combined(headline).verdict.headline in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.settled)
        table = app.screen.query_one(MetricsTable)
        state = headline[0]
        for r in runs:
            s = run_summary(state.runs[r.label], state.gpu)
            got = table.get_cell("requests", r.label).plain
            assert got == f"{s.metrics.completed}/{s.metrics.errors}" == "12/0"
            assert table.get_cell("ttft_mean", r.label).plain.split()[0] == fmt.ms(s.metrics.mean_ttft_ms)
            assert table.get_cell("status", r.label).plain == "ok"
        await pilot.press("q")
    assert app.return_code == 0
    assert_no_group_left(session)


async def test_cancel_stops_every_process_group(in_tmp):
    app = hanging_app(in_tmp)
    session = session_of(in_tmp)
    async with app.run_test(size=(120, 40)) as pilot:
        await start(pilot, app)
        await in_rollout(pilot, app)
        groups = process_groups(session)
        assert groups and all(group_alive(g) for g in groups)
        await pilot.press("c")
        assert isinstance(app.screen, Choice)
        await pilot.click("#cancel")
        await wait_for(pilot, lambda: app.finished, timeout=30, what="the runs to stop")
        assert app.statuses["vllm-sleep1"] == "cancelled"
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.snapshot.settled and app.snapshot.all_ended)
        assert app.screen.query_one(MetricsTable).get_cell("status", "vllm-sleep1").plain == "cancelled"
        await pilot.press("q")
    assert app.return_code == 1
    assert_no_group_left(session)


async def test_quit_while_running_asks_then_stops_cleanly(in_tmp):
    app = hanging_app(in_tmp, n=1)
    session = session_of(in_tmp)
    async with app.run_test(size=(100, 30)) as pilot:
        await start(pilot, app)
        await in_rollout(pilot, app)
        await pilot.press("q")
        assert isinstance(app.screen, Choice)
        await pilot.click("#stay")
        assert isinstance(app.screen, DashboardScreen) and app.runs_going()
        await pilot.press("q")
        await pilot.click("#stop")
        await wait_for(pilot, lambda: not app.is_running, timeout=30, what="the app to exit")
    assert app.return_code == 1
    assert_no_group_left(session)


async def test_runner_error_is_shown(in_tmp):
    runs = fake_runs(in_tmp, steps=3)
    runs[1].env = {"FAKE_FAIL": "OOM"}
    app = live_app(in_tmp, runs)
    async with app.run_test(size=(160, 45)) as pilot:
        await start(pilot, app)
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen), timeout=60)
        await wait_for(pilot, lambda: app.snapshot.settled and app.snapshot.all_ended, what="the final snapshot")
        assert app.statuses["sglang-release"] == "failed"
        text = screen_text(app)
        assert "not ranked: sglang-release — failed (OOM)" in text
        assert "[OOM] engine ran out of GPU memory" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.snapshot.settled)
        assert app.screen.query_one(MetricsTable).get_cell("status", "sglang-release").plain == "failed"
        pane = app.screen.query_one(LogPanes).panes["sglang-release"]
        assert "ERROR   [OOM] step 2: engine ran out of GPU memory" in pane.text()
        assert "1 error" in screen_text(app).splitlines()[0]
        await pilot.press("q")
    assert app.return_code == 1


async def test_preflight_blocks_start_with_the_reason(in_tmp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        runs = fake_runs(in_tmp, ports=(port, port + 1 if port < 65535 else port - 1))
        app = live_app(in_tmp, runs)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.screen.result is not None, what="preflight")
            screen = app.screen
            assert not screen.ready and screen.query_one("#start", Button).disabled
            assert f"port {port}: 127.0.0.1:{port} is in use" in screen_text(app)
            await pilot.press("ctrl+r")
            assert isinstance(app.screen, LaunchScreen)  # not started
            # fix it in the form: the check re-runs and Start opens
            screen.set_value("vllm-port", str(port + 2))
            await wait_for(pilot, lambda: screen.ready, what="preflight after the fix")
            assert not screen.query_one("#start", Button).disabled
            screen.set_value("f-num_steps", "zero")
            await wait_for(pilot, lambda: "RL steps: 'zero', expected a number" in screen_text(app))
            assert screen.query_one("#start", Button).disabled
            await pilot.press("ctrl+q")
        assert app.return_code == 0


@pytest.mark.slow
async def test_detached_runs_outlive_the_ui(in_tmp):
    """Start detached, quit leaving the runs going; a follow UI re-attaches; stopping it leaves nothing."""
    app = hanging_app(in_tmp, detach=True)
    session = session_of(in_tmp)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.ready)
        assert app.screen.query_one("#f-detach").value is True
        await pilot.press("ctrl+r")
        await in_rollout(pilot, app, timeout=30)
        pid = app.detached_pid
        await pilot.press("q")
        await pilot.click("#leave")
        await wait_for(pilot, lambda: not app.is_running)
    app.shutdown()
    assert app.left_running and group_alive(pid)
    follow = make_app("replay", paths=[session], follow=True)
    async with follow.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: follow.snapshot is not None and any(r.status == "running" for r in follow.snapshot.runs))
        await pilot.press("c")
        await pilot.click("#cancel")
        await wait_for(pilot, lambda: follow.snapshot.all_ended, timeout=30, what="the detached runs to stop")
        await pilot.press("q")
    follow.shutdown()
    import time

    end = time.monotonic() + 10
    while group_alive(pid) and time.monotonic() < end:
        # The UI let go of the detached orchestrator when it quit (the CLI would have exited, handing it to
        # init); here it is still this test process's child: reap it once it ended, or it lingers as a zombie.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    assert not group_alive(pid)
    assert_no_group_left(session)


async def test_hangup_stops_attached_runs_and_quits(in_tmp):
    """SIGHUP/SIGTERM (SSH drop, `sgtui stop`) go through the same clean cancel as the cancel key."""
    import signal

    app = hanging_app(in_tmp)
    session = session_of(in_tmp)
    async with app.run_test(size=(100, 30)) as pilot:
        await start(pilot, app)
        await in_rollout(pilot, app)
        app.on_terminate_signal(signal.SIGHUP)
        await wait_for(pilot, lambda: not app.is_running, timeout=30, what="the app to exit")
    assert app.statuses["vllm-sleep1"] == "cancelled"
    assert_no_group_left(session)


async def test_launch_form_prefills_from_flags_and_last_session(in_tmp):
    from sgtui.session import SessionWriter, make_header

    last = fake_runs(in_tmp, steps=9)
    last[0].concurrency = 3
    (in_tmp / "sessions").mkdir()
    with SessionWriter(in_tmp / "sessions" / "20260101T000000Z-old.jsonl") as w:
        w.write(make_header(["sgtui"], {"runs": [r.to_dict() for r in last]}))
    runs = fake_runs(in_tmp, steps=2)
    runs[0].concurrency = 7
    app = live_app(in_tmp, runs, explicit={"concurrency"})
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.result is not None)
        screen = app.screen
        assert screen.query_one("#f-num_steps").value == "9"  # not on the command line: the last session's
        assert screen.query_one("#f-concurrency").value == "7"  # given on the command line: kept
        assert "prefilled from 20260101T000000Z-old.jsonl" in screen_text(app)
        # session headers redact keys that look like secrets ("...tokens"): those keep the flags' values
        assert screen.query_one("#f-max_output_tokens").value == str(runs[0].max_output_tokens)
        opts = screen.read_options()
        assert [r.num_steps for r in opts.to_runs()] == [9, 9]
        await pilot.press("ctrl+q")


async def test_runs_that_never_started_end_as_the_cli_says(in_tmp):
    """The UI runs the session through `sgtui.lifecycle` (as --no-ui does): a port another sgtui holds is a
    fatal error shown in one line, and the exit code is the CLI's "nothing ran" (2), not a failed run (1)."""
    from sgtui.lifecycle import EXIT_NOT_STARTED
    from sgtui.portlock import PortBusy

    def busy(runs, path, **kw):
        raise PortBusy("port 8100 is held by sgtui pid 4242 (session other.jsonl)")

    app = make_app("live", runs=fake_runs(in_tmp, n=1), session_path=session_of(in_tmp), exports=(),
                   orchestrator_factory=busy, auto_verdict=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.finished, what="the runs to end")
        assert "port 8100 is held by sgtui pid 4242" in app.fatal and not app.runs_going()
        await pilot.press("q")
    assert app.return_code == EXIT_NOT_STARTED == 2
