"""Ctrl-C in the live UI (Pilot), with the real orchestrator and runner and the FAULT-INJECTION vLLM
stand-in (fault_python.sh). Textual's raw mode turns Ctrl-C into a key, not SIGINT: it must neither be
ignored (Textual's default only says "press ctrl+q") nor orphan the runs; it asks, then stops them cleanly."""

from __future__ import annotations

from pathlib import Path

from sgtui.config import RunConfig
from sgtui.tui.app import SgtuiApp, make_app
from sgtui.tui.screens.dialogs import Choice
from tests.engines import free_port, needs_vllm
from tests.faults.harness import SHIM, assert_left_clean, assert_readable, ends, fault, fault_env, model_dir
from tests.tui.tui_helpers import screen_text, wait_for

pytestmark = [needs_vllm]


def training_ui(tmp_path: Path, session_name: str = "s.jsonl", **kw) -> tuple[SgtuiApp, Path, int]:
    """The live UI on one vLLM run on the fault-injection engine whose single step trains for a minute (long
    enough to act on the UI mid-run), recording to sessions/`session_name`: (app, session, port)."""
    port = free_port()
    runs = [RunConfig(label="vllm-sleep1", backend="vllm", strategy="sleep1", python=str(SHIM),
                      model=str(model_dir(tmp_path, adapters=False)), device="cpu", port=port, num_steps=1,
                      num_rollouts=4, concurrency=4, max_input_tokens=32, max_output_tokens=16,
                      sim_train_seconds=60, env=fault_env())]
    session = tmp_path / "sessions" / session_name
    return make_app("live", runs=runs, session_path=session, exports=(), check_imports=False, **kw), session, port


async def in_training(pilot, app) -> None:
    """Wait until a run of `app` is in its train phase (engine up, runner busy: the runs are going)."""
    await wait_for(pilot, lambda: app.snapshot is not None and any(r.phase == "train" for r in app.snapshot.runs),
                   timeout=60, what="the train phase")


@fault("Ctrl-C in the UI (runs attached)", "asks first; 'Stop runs & quit' cancels them cleanly (run_end cancelled), "
       "the UI exits, nothing left, port free; 'Stay' keeps them going")
async def test_ctrl_c_in_the_live_ui(tmp_path, observed):
    app, session, port = training_ui(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await in_training(pilot, app)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, Choice), what="the quit question")
        await pilot.click("#stay")
        await wait_for(pilot, lambda: not isinstance(app.screen, Choice))
        assert app.runs_going(), "'Stay' stopped the runs"
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, Choice), what="the quit question again")
        await pilot.click("#stop")
        await wait_for(pilot, lambda: not app.is_running, timeout=60, what="the UI to exit after cancelling")
    app.shutdown()
    assert app.statuses == {"vllm-sleep1": "cancelled"}
    assert_readable(session)
    assert ends(session) == {"vllm-sleep1": "cancelled"}
    assert_left_clean(session, [port])
    observed("ctrl+c -> quit question; 'Stay' kept the runs; 'Stop runs & quit' -> run_end cancelled, UI exited "
             f"(code {app.return_code}); nothing left, port free")


@fault("the UI closed with 'd' while runs go detached", "the UI exits at once, the detached orchestrator runs "
       "on; 'd' on runs attached to the UI refuses (they would die with it); `sgtui stop` ends them cleanly")
async def test_detach_key_leaves_detached_runs_going(tmp_path, observed):
    import re

    from tests.faults.harness import sgtui
    from sgtui.sessions_index import pid_alive

    app, session, port = training_ui(tmp_path, detach=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await in_training(pilot, app)
        pid = app.detached_pid
        assert "Detach" in screen_text(app).splitlines()[-1]  # the footer offers it
        await pilot.press("d")
        await wait_for(pilot, lambda: not app.is_running, timeout=10, what="the UI to exit")
    app.shutdown()
    assert app.left_running and app.return_code == 0 and pid_alive(pid)
    assert ends(session) == {}
    stop = sgtui("stop", str(session), timeout=120)
    assert stop.returncode == 0 and f"pid {pid}" in stop.stderr, stop.stderr
    assert ends(session) == {"vllm-sleep1": "cancelled"}
    assert_left_clean(session, [port])
    # runs attached to the UI (the orchestrator is a thread of it): 'd' says why not, and nothing changes
    app2, session2, port2 = training_ui(tmp_path, "s2.jsonl")
    async with app2.run_test(size=(120, 40)) as pilot:
        await in_training(pilot, app2)
        assert "Detach" not in screen_text(app2).splitlines()[-1]
        await pilot.press("d")
        await pilot.pause(0.3)
        assert app2.is_running and app2.runs_going()
        app2.cancel_runs()
        await wait_for(pilot, lambda: not app2.runs_going(), timeout=60, what="the runs to stop")
        await pilot.press("q")
    app2.shutdown()
    assert_left_clean(session2, [port2])
    stopped = re.sub(r"  +", " ", stop.stdout.strip())[:90]
    observed(f"'d' -> UI exited (code 0), orchestrator pid {pid} still running; {stopped}; "
             "attached runs: 'd' hidden and inert, runs go on")
