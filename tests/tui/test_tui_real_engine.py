"""Launch -> run -> verdict in the UI with the real orchestrator and the real vLLM CPU server."""

from __future__ import annotations

import pytest

from sgtui import fmt
from sgtui.config import RunConfig
from sgtui.events import Phase, Proc, RunStart
from sgtui.export import load_sessions
from sgtui.session import read_session
from sgtui.state import run_summary
from sgtui.tui.app import make_app
from sgtui.tui.screens.launch import LaunchScreen
from sgtui.tui.screens.live import DashboardScreen
from sgtui.tui.screens.verdict import VerdictScreen
from sgtui.tui.widgets.metrics_table import MetricsTable
from tests.engines import TINY, VLLM_PY, free_port, needs_vllm, port_is_free
from tui_helpers import group_alive, wait_for

pytestmark = [pytest.mark.engine, needs_vllm]


async def test_real_vllm_run_in_the_ui(in_tmp):
    port = free_port()
    runs = [RunConfig(label="vllm-sleep1", backend="vllm", strategy="sleep1", sync="lora", python=str(VLLM_PY),
                      model=str(TINY), device="cpu", port=port, num_steps=2, num_rollouts=4, concurrency=4,
                      max_input_tokens=32, max_output_tokens=16, sim_train_seconds=0.2,
                      initial_adapter=str(TINY / "adapters" / "initial"), workdir=str(in_tmp / "work"))]
    session = in_tmp / "sessions" / "s.jsonl"
    app = make_app("launch", runs=runs, session_path=session, check_imports=False)
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen) and app.screen.ready, timeout=60,
                       what="preflight ok")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the dashboard")
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen), timeout=300, what="the verdict")
        await wait_for(pilot, lambda: app.snapshot.settled and app.snapshot.all_ended, what="the final snapshot")
        assert app.statuses == {"vllm-sleep1": "ok"}
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.settled)
        state = load_sessions([session])[0]
        s = run_summary(state.runs["vllm-sleep1"], state.gpu)
        table = app.screen.query_one(MetricsTable)
        assert table.get_cell("requests", "vllm-sleep1").plain == f"{s.metrics.completed}/{s.metrics.errors}" == "8/0"
        # the row the verdict compares shows its number: the steady-state mean of per-step values
        assert table.get_cell("ttft_mean", "vllm-sleep1").plain.split()[0] == fmt.ms(s.phase_means["mean_ttft_ms"])
        await pilot.press("q")
    events = read_session(session).events
    ends = {(e.step, e.name) for e in events if isinstance(e, Phase) and e.edge == "end"}
    assert {(n, p) for n in (1, 2) for p in ("rollout", "offload", "train", "reload", "weight_sync")} <= ends
    groups = [e.pid for e in events if isinstance(e, RunStart)] + [e.pgid for e in events if isinstance(e, Proc)]
    assert len(groups) >= 2 and not any(group_alive(g) for g in groups)
    assert port_is_free(port)
