"""Replay through the real app (Pilot): table cells, lanes, playback keys, errors, layouts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from gen_session import DEFAULT_RUNS, RunSpec, generate, six_runs, write_session
from sgtui import fmt
from textual.binding import Binding
from sgtui.state import SessionState, run_summary
from sgtui.tui.app import make_app
from sgtui.viewmodel.views import fmt_clock
from sgtui.tui.screens.replay import ReplayScreen
from sgtui.tui.screens.verdict import VerdictScreen
from sgtui.tui.widgets.log_pane import LogPanes
from sgtui.tui.widgets.metrics_table import MetricsTable, cell_text
from sgtui.tui.widgets.timeline import Timeline, lane_summary
from tui_helpers import screen_text, settled, wait_for


def cell(table: MetricsTable, row: str, col: str) -> str:
    return table.get_cell(row, col).plain


async def replay_to_end(pilot, app, n_events: int) -> None:
    await wait_for(pilot, lambda: settled(app, n_events), what="replay to reach the end")
    await pilot.pause()


def replay_app(session: Path, events: list, **kw):
    """The replay app on `events`, written to the file `session` first, as a recording on disk would be.
    Playing at max unless told otherwise (`sgtui replay --play --speed max`): these tests read the end state;
    a plain `sgtui replay` opens paused at the first event (test_replay_opens_paused_at_the_first_event)."""
    kw.setdefault("speed", "max")
    kw.setdefault("playing", True)
    return make_app("replay", paths=[write_session(session, events)], **kw)


def replay_bar(app) -> str:
    """The transport line above the footer, as shown."""
    return screen_text(app).splitlines()[-2]


@asynccontextmanager
async def replayed(session: Path, events: list, size: tuple[int, int]) -> AsyncIterator[tuple]:
    """(app, pilot) once the whole recording has played: what a user sees at the end of a replay."""
    app = replay_app(session, events)
    async with app.run_test(size=size) as pilot:
        await replay_to_end(pilot, app, len(events))
        yield app, pilot


async def test_table_shows_the_states_numbers(tmp_path):
    events = generate(seed=11)
    async with replayed(tmp_path / "a.jsonl", events, (160, 45)) as (app, pilot):
        table = app.screen.query_one(MetricsTable)
        state = SessionState().apply_all(events)
        winners = {row.key: row.winner for row in app.snapshot.verdict.rows}
        for spec in DEFAULT_RUNS:
            s = run_summary(state.runs[spec.label], state.gpu)
            m = s.metrics
            steady = s.phase_means  # what the verdict compares: steady-state means of per-step values
            expect = {
                "tok_mean": fmt.num(steady["output_throughput"]),
                "ttft_mean": fmt.ms(steady["mean_ttft_ms"]),
                "ttft_p50": fmt.ms(m.p50_ttft_ms),
                "ttft_p99": fmt.ms(m.p99_ttft_ms),
                "itl": fmt.ms(steady["mean_itl_ms"]),
                "tpot": fmt.ms(steady["mean_tpot_ms"]),
                "e2e_p99": fmt.ms(steady["p99_e2el_ms"]),
                "requests": f"{m.completed}/{m.errors}",
                "transition": fmt.secs(s.phase_means["transition"]),
                "train": fmt.secs(s.phase_means["train"]),
                "step_time": fmt.secs(s.phase_means["step_total"]),
                "status": "ok",
            }
            vkeys = {"tok_mean": "output_throughput", "ttft_mean": "mean_ttft_ms", "itl": "mean_itl_ms",
                     "tpot": "mean_tpot_ms", "e2e_p99": "p99_e2el_ms", "transition": "transition", "train": "train",
                     "step_time": "step_total"}
            for row, want in expect.items():
                got = cell(table, row, spec.label)
                better = winners.get(vkeys.get(row, "")) == spec.label
                assert got == (f"{want} ▲" if better else want), (spec.label, row)
        # the highlight follows the verdict: only runs that win outside the noise carry it
        marked = {(r, c) for r in ("step_time", "transition", "itl") for c in (s.label for s in DEFAULT_RUNS)
                  if cell(table, r, c).endswith("▲")}
        assert marked == {(r, winners[k]) for r, k in (("step_time", "step_total"), ("transition", "transition"),
                                                        ("itl", "mean_itl_ms")) if winners[k]}


async def test_timeline_lanes_match_the_phase_events(tmp_path):
    events = generate(seed=12)
    async with replayed(tmp_path / "a.jsonl", events, (200, 50)) as (app, pilot):
        timeline = app.screen.query_one(Timeline)
        state = SessionState().apply_all(events)
        for rv in timeline.runs:
            run = state.runs[rv.label]
            want: dict[int, list[tuple[str, float]]] = {}
            for sp in run.timeline:
                want.setdefault(sp.step, []).append((sp.name, sp.duration))
            got = lane_summary(rv)
            assert {k: [n for n, _ in v] for k, v in got.items()} == {k: [n for n, _ in v] for k, v in want.items()}
            for step in want:
                assert [d for _, d in got[step]] == pytest.approx([d for _, d in want[step]])
        text = screen_text(app)
        assert "s3" in text and "train" in text and "offload" in text


async def test_playback_keys(tmp_path):
    events = generate(seed=13, steps=8)  # ~100 s of session: 10x play lasts long enough to be seen on a busy box
    app = replay_app(tmp_path / "a.jsonl", events, playing=False, speed="1x")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None and not app.snapshot.replay.loading)
        assert isinstance(app.screen, ReplayScreen)
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.snapshot.replay.step == 1 and app.snapshot.settled, what="seek to step 1")
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.snapshot.replay.step == 2 and app.snapshot.settled, what="seek to step 2")
        assert "step 2 of 1-8" in replay_bar(app)
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: app.snapshot.replay.step == 1 and app.snapshot.settled, what="seek back")
        await pilot.press("s")  # 1x -> 10x
        await pilot.press("space")
        await wait_for(pilot, lambda: "playing · 10x" in replay_bar(app), what="the bar to show 10x play")
        assert app.snapshot.replay.playing and app.snapshot.replay.speed == "10x"
        await pilot.press("space")
        await wait_for(pilot, lambda: not app.snapshot.replay.playing)
        await pilot.press("s")  # -> max
        await pilot.press("space")
        await replay_to_end(pilot, app, len(events))
        assert replay_bar(app).lstrip().startswith("end · max")
        await pilot.press("g")
        await pilot.press("2", "enter")
        await wait_for(pilot, lambda: app.snapshot.replay.step == 2 and app.snapshot.settled, what="go to step 2")
        await pilot.press("v")
        assert isinstance(app.screen, VerdictScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, ReplayScreen)


async def test_error_is_shown_with_its_category(tmp_path):
    runs = (DEFAULT_RUNS[0], RunSpec("sglang-oom", "sglang", "release", fail_step=2))
    events = generate(seed=14, runs=runs)
    async with replayed(tmp_path / "f.jsonl", events, (120, 40)) as (app, pilot):
        table = app.screen.query_one(MetricsTable)
        assert cell(table, "status", "sglang-oom") == "failed"
        assert cell(table, "requests", "sglang-oom") == "12/4"
        assert "1 error" in screen_text(app).splitlines()[0]
        table.select_run("sglang-oom")
        await pilot.press("l")
        await pilot.pause()
        pane = app.screen.query_one(LogPanes).panes["sglang-oom"]
        assert not pane.collapsed
        text = pane.text()
        assert "ERROR   [OOM] step 2: engine ran out of GPU memory" in text
        assert "[OOM] torch.OutOfMemoryError" in text  # the log line, categorised
        assert "errors" in pane.title or "error" in pane.title
        await pilot.press("v")
        await pilot.pause()
        assert "not ranked: sglang-oom" in screen_text(app)


async def test_no_gpu_panel_says_so(tmp_path):
    events = generate(seed=15, gpu=False)
    async with replayed(tmp_path / "cpu.jsonl", events, (80, 24)) as (app, pilot):
        assert "GPU: no NVIDIA driver — memory is not measured; everything else works" in screen_text(app)
        assert cell(app.screen.query_one(MetricsTable), "status", "vllm-sleep1") == "ok"


@pytest.mark.parametrize("n,size", [(6, (80, 24)), (6, (200, 50)), (6, (50, 16)), (1, (80, 24)), (1, (200, 50))])
async def test_one_or_six_runs_and_resizes_keep_a_readable_layout(tmp_path, n, size):
    specs = six_runs() if n == 6 else DEFAULT_RUNS[:1]
    events = generate(seed=16, runs=specs, steps=2)
    async with replayed(tmp_path / "runs.jsonl", events, size) as (app, pilot):
        table = app.screen.query_one(MetricsTable)
        assert table.run_keys == [s.label for s in specs]
        for spec in specs:
            assert cell(table, "requests", spec.label) == "16/0"
        first = screen_text(app).splitlines()[0]
        assert f"{n} run" in first
        if n == 6 and size[0] <= 80:  # narrow columns still tell the runs apart
            header = next(line for line in screen_text(app).splitlines() if "metric" in line)
            assert "v-sleep1" in header and "v-sleep2" in header
        for w, h in ((40, 12), (200, 50), (80, 24)):
            await pilot.resize_terminal(w, h)
            await pilot.pause(0.2)
            assert app.screen.has_class("-wide") == (w >= 150 and h >= 36)
            assert len(screen_text(app).splitlines()) == h


async def test_sessions_side_by_side_become_columns(tmp_path):
    a = write_session(tmp_path / "a.jsonl", generate(seed=17, runs=(DEFAULT_RUNS[0],)))
    b = write_session(tmp_path / "b.jsonl", generate(seed=18, runs=(DEFAULT_RUNS[0], DEFAULT_RUNS[1])))
    app = make_app("replay", paths=[a, b], speed="max", playing=True)
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: settled(app) and app.snapshot.replay.at_end)
        table = app.screen.query_one(MetricsTable)
        assert table.run_keys == ["vllm-sleep1#1", "vllm-sleep1#2", "sglang-release"]
        run = next(r for r in app.snapshot.runs if r.key == "vllm-sleep1#2")
        assert cell(table, "tok_mean", "vllm-sleep1#2").split()[0] == cell_text("tok_mean", run)
        assert "session #1 a" in screen_text(app) and "session #2 b" in screen_text(app)


async def test_follow_reattaches_to_a_session_being_written(tmp_path):
    from sgtui.events import encode

    events = generate(seed=19)
    path = tmp_path / "live.jsonl"
    cut = len(events) // 2
    write_session(path, events[:cut])
    app = make_app("replay", paths=[path], follow=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.events == cut)
        assert "follow" in screen_text(app).splitlines()[0]
        with path.open("ab") as f:
            for e in events[cut:]:
                f.write(encode(e))
        await wait_for(pilot, lambda: settled(app) and app.snapshot.events == len(events))
        table = app.screen.query_one(MetricsTable)
        assert cell(table, "status", "sglang-release") == "ok"
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


def _shared_generator():
    """tests/gen.py, the project's shared seeded generator (this file's own covers logs, errors, GPU shares)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("sgtui_shared_gen", Path(__file__).resolve().parents[1] / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.generate


async def test_shared_generator_sessions_show_the_states_numbers(tmp_path):
    generate_shared = _shared_generator()
    events = generate_shared(steps=4, requests=12, seed=5, noise=0.2, speed={"sglang-release": 0.8})
    async with replayed(tmp_path / "shared.jsonl", events, (120, 40)) as (app, pilot):
        table = app.screen.query_one(MetricsTable)
        state = SessionState().apply_all(events)
        for label in ("vllm-sleep1", "sglang-release"):
            s = run_summary(state.runs[label], state.gpu)
            assert cell(table, "requests", label) == f"{s.metrics.completed}/{s.metrics.errors}"
            assert cell(table, "ttft_p99", label).split()[0] == fmt.ms(s.metrics.p99_ttft_ms)
            assert cell(table, "step_time", label).split()[0] == fmt.secs(s.phase_means["step_total"])
        verdict = app.snapshot.verdict
        for row in verdict.rows:
            if row.winner:  # the highlight follows the verdict exactly
                key = {"step_total": "step_time", "output_throughput": "tok_mean", "mean_ttft_ms": "ttft_mean",
                       "mean_itl_ms": "itl", "mean_tpot_ms": "tpot", "p99_e2el_ms": "e2e_p99",
                       "transition": "transition", "train": "train"}.get(row.key)
                if key:
                    assert cell(table, key, row.winner).endswith("▲")


SESSIONS = Path(__file__).resolve().parents[2] / "sessions"


@pytest.mark.parametrize("flags", [{}, {"include_first_step": True}])
async def test_verdict_screen_shows_the_text_reports_numbers_and_notes(flags):
    """The UI's verdict and `sgtui report` come from one verdict with the same options: the headline, the
    confidence, which steps it is over, every caveat and every run's mean per metric read the same."""
    from sgtui.export import load_sessions, render
    from sgtui.options import ReportOptions

    path = SESSIONS / "20261203T221836Z-vllm-sleep1_vs_sglang-release-training-h200-1b.jsonl"
    opts = ReportOptions(**flags)
    text = " ".join(render("txt", load_sessions([path]), opts).split())
    app = make_app("replay", paths=[path], report_options=opts, speed="max", playing=True)
    async with app.run_test(size=(200, 60)) as pilot:
        await replay_to_end(pilot, app, 0)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen), what="the verdict screen")
        v = app.snapshot.verdict
        shown = " ".join(screen_text(app).split())
    assert v.basis == ("steady state: steps 1-4; step 1 included (--include-first-step)" if flags
                       else "steady state: steps 2-4; step 1 shown apart (--include-first-step counts it)")
    for line in (v.headline, v.confidence, v.basis, *v.caveats):
        assert line in text and line in shown, line
    for row in v.rows:
        for run, mean in row.means.items():
            if mean is not None:
                value = fmt.unit_value(mean, row.unit)
                assert value in shown, (row.label, run, value)
        for run in row.diffs_abs:
            assert row.versus(run) in text and row.versus(run) in shown, (row.label, run)


async def test_verdict_screen_and_reports_name_the_findings(tmp_path):
    """A crafted run whose offload gave back only 80 % of the engine's memory: the finding is one line of the
    verdict, printed the same by the text and Markdown reports, listed in the JSON and shown on the UI's
    verdict screen, whose memory line carries the device column beside the engine's own."""
    import orjson
    from sgtui.export import load_sessions, render
    from sgtui.findings import finding_line
    from tests.test_findings import crafted

    events = crafted(held=[8000.0] * 4) + crafted("sglang-release", seed=1)[1:]
    path = write_session(tmp_path / "findings.jsonl", events)
    states = load_sessions([path])
    txt, md = (" ".join(render(f, states).split()) for f in ("txt", "md"))
    doc = orjson.loads(render("json", states))
    app = make_app("replay", paths=[path], speed="max", playing=True)
    async with app.run_test(size=(200, 60)) as pilot:
        await replay_to_end(pilot, app, 0)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen), what="the verdict screen")
        (f,) = app.snapshot.verdict.findings
        shown = " ".join(screen_text(app).split())
    assert (f.run, f.key) == ("vllm-sleep1", "offload_freed_little")
    line = " ".join(finding_line(f).split())
    assert line in txt and line in md and line in shown
    assert [(x["run"], x["key"]) for x in doc["verdict"]["findings"]] == [("vllm-sleep1", "offload_freed_little")]
    assert "still held 7.81GiB (device above idle floor" in shown


# -- driving a replay (issue 14, "Use"): each of these failed on the replay that opened at the end ----------


def _step_starts(events: list) -> dict[tuple[str, int], float]:
    """(run, step) -> the step's first phase start: where seek by step goes."""
    from sgtui.events import Phase

    out: dict[tuple[str, int], float] = {}
    for e in events:
        if isinstance(e, Phase) and e.edge == "start" and e.step >= 1:
            out[(e.run, e.step)] = min(e.t, out.get((e.run, e.step), e.t))
    return out


async def _loaded(pilot, app) -> None:
    await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.replay is not None
                   and not app.snapshot.replay.loading and app.snapshot.replay.run != "", what="the replay to load")


async def test_replay_opens_paused_at_the_first_event_and_space_is_the_one_pause(tmp_path):
    """`sgtui replay FILE` (the CLI's defaults): first event, paused, 1x, and the bar says so; Space plays and
    pauses; `p` is the same pause (not a second, view-only one)."""
    import inspect

    from sgtui.tui.app import run_replay

    events = generate(seed=31, steps=4)  # ~50 s of session
    assert inspect.signature(run_replay).parameters["speed"].default == "1x"
    assert inspect.signature(run_replay).parameters["playing"].default is False
    path = write_session(tmp_path / "a.jsonl", events)
    app = make_app("replay", paths=[path])  # what `sgtui replay a.jsonl` builds
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot, app)
        await pilot.pause(0.3)
        r = app.snapshot.replay
        assert (r.playing, r.speed, r.position, r.step, r.at_end) == (False, "1x", 0.0, 0, False)
        assert app.snapshot.events == sum(1 for e in events if e.t <= events[0].t)  # the first event, no more
        duration = fmt_clock(events[-1].t - events[0].t)
        bar = replay_bar(app)
        assert f"paused · 1x · 0:00 / {duration} · step 0 of 1-4 · vllm-sleep1 (run 1 of 2)" in bar, bar
        await pilot.press("space")
        await wait_for(pilot, lambda: app.snapshot.replay.playing and app.snapshot.replay.position > 0.3,
                       what="space to play")
        assert "playing · 1x" in replay_bar(app)
        await pilot.press("space")
        await wait_for(pilot, lambda: not app.snapshot.replay.playing, what="space to pause")
        at = app.snapshot.replay.position
        await pilot.pause(0.4)
        assert app.snapshot.replay.position == at and "paused · 1x" in replay_bar(app)
        await pilot.press("p")  # the same pause: playback goes on, the view is not frozen
        await wait_for(pilot, lambda: app.snapshot.replay.playing and app.snapshot.replay.position > at,
                       what="p to play")
        assert not app.screen.view_paused and "VIEW PAUSED" not in screen_text(app)
        await pilot.press("p")
        await wait_for(pilot, lambda: not app.snapshot.replay.playing, what="p to pause")
        assert not app.screen.view_paused


@pytest.mark.parametrize("key", ["question_mark", "f1", "h"])
async def test_help_lists_every_key_of_the_screen(tmp_path, key):
    from sgtui.tui.app import SgtuiApp
    from sgtui.tui.screens.help import HelpScreen
    from sgtui.tui.screens.live import DashboardScreen

    app = replay_app(tmp_path / "a.jsonl", generate(seed=32, steps=2), speed="1x", playing=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot, app)
        replay = app.screen
        await pilot.press(key)
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        shown = screen_text(app)
        for binding in ReplayScreen.BINDINGS + DashboardScreen.BINDINGS + SgtuiApp.BINDINGS:
            action = binding.action.removeprefix("app.")
            if action in ("cancel_runs", "detach_ui"):  # not possible in a replay: hidden, as in the footer
                assert replay.check_action(action, ()) is False
                continue
            for k in binding.key.split(","):
                if (k.strip(), action) in (("p", "pause_view"),):  # replaced by the replay's own `p`
                    continue
                want = app.get_key_display(Binding(k.strip(), action))
                line = next((ln for ln in shown.splitlines() if f" {want} " in ln or f" {want}," in ln), None)
                assert line is not None, (k, action, shown)
                if action != "help":
                    assert binding.description in line, (k, binding.description, line)
        assert "Play/pause" in next(ln for ln in shown.splitlines() if " space" in ln or " p, space" in ln)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is replay, what="escape to close the help")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: app.screen is replay, what="? to close the help")


async def test_seek_walks_every_runs_steps_and_refuses_a_step_that_is_not_there(tmp_path):
    events = generate(seed=33, steps=3)  # two runs one after the other, steps 1-3 each
    starts = _step_starts(events)
    app = replay_app(tmp_path / "a.jsonl", events, speed="1x", playing=False)
    async with app.run_test(size=(160, 45), notifications=True) as pilot:  # the refusal is a toast
        await _loaded(pilot, app)
        assert app.snapshot.replay.run_steps == (("vllm-sleep1", (1, 2, 3)), ("sglang-release", (1, 2, 3)))
        walked = []
        for _ in range(6):
            before = app.snapshot.seq
            await pilot.press("right_square_bracket")
            await wait_for(pilot, lambda: app.snapshot.seq > before and app.snapshot.settled
                           and (app.snapshot.replay.run, app.snapshot.replay.step) not in walked[-1:],
                           what="] to seek")
            r = app.snapshot.replay
            walked.append((r.run, r.step))
            assert app.snapshot.events == sum(1 for e in events if e.t <= starts[(r.run, r.step)])
        assert walked == [("vllm-sleep1", 1), ("vllm-sleep1", 2), ("vllm-sleep1", 3),
                          ("sglang-release", 1), ("sglang-release", 2), ("sglang-release", 3)]
        assert "step 3 of 1-3 · sglang-release (run 2 of 2)" in replay_bar(app)
        # back across the runs' boundary
        await pilot.press("left_square_bracket", "left_square_bracket", "left_square_bracket")
        await wait_for(pilot, lambda: (app.snapshot.replay.run, app.snapshot.replay.step) == ("vllm-sleep1", 3)
                       and app.snapshot.settled, what="[ back into the first run")
        # g N: a step of the run under the playhead ...
        await pilot.press("g", "2", "enter")
        await wait_for(pilot, lambda: (app.snapshot.replay.run, app.snapshot.replay.step) == ("vllm-sleep1", 2)
                       and app.snapshot.settled, what="g 2")
        await pilot.press("right_curly_bracket")  # the end: the playhead is in the second run
        await wait_for(pilot, lambda: app.snapshot.replay.at_end and app.snapshot.settled, what="} to the end")
        await pilot.press("g", "2", "enter")
        await wait_for(pilot, lambda: (app.snapshot.replay.run, app.snapshot.replay.step) == ("sglang-release", 2)
                       and app.snapshot.settled, what="g 2 in the second run")
        assert app.snapshot.events == sum(1 for e in events if e.t <= starts[("sglang-release", 2)])
        # ... or of a column picked with ←/→
        await pilot.press("right", "left")
        assert app.screen.query_one(MetricsTable).selected_run == "vllm-sleep1"
        await pilot.press("g", "3", "enter")
        await wait_for(pilot, lambda: (app.snapshot.replay.run, app.snapshot.replay.step) == ("vllm-sleep1", 3)
                       and app.snapshot.settled, what="g 3 in the picked run")
        assert app.snapshot.events == sum(1 for e in events if e.t <= starts[("vllm-sleep1", 3)])
        # a step that is not there: refused, said on screen, nothing moves (it used to jump to the end)
        where = (app.snapshot.replay.position, app.snapshot.events)
        await pilot.press("g", "5", "enter")
        await wait_for(pilot, lambda: "no step 5 in vllm-sleep1: its steps are 1-3" in screen_text(app),
                       what="the refusal")
        await pilot.pause(0.3)
        assert (app.snapshot.replay.position, app.snapshot.events) == where and not app.snapshot.replay.at_end


async def test_log_rewinds_with_the_playhead(tmp_path):
    from sgtui.events import Log
    from sgtui.tui.widgets.log_pane import format_line
    from sgtui.viewmodel.views import LogLine

    events = generate(seed=34, steps=3)
    starts = _step_starts(events)
    app = replay_app(tmp_path / "a.jsonl", events)  # played to the end
    async with app.run_test(size=(160, 45)) as pilot:
        await replay_to_end(pilot, app, len(events))
        panes = app.screen.query_one(LogPanes).panes
        first = panes["vllm-sleep1"]
        assert not first.collapsed  # 160x45 opens the logs: its Log widget shows what the pane holds
        assert "step 3 reload done" in first.text()
        await pilot.press("left_curly_bracket", "right_square_bracket", "right_square_bracket")  # start, s1, s2
        t = starts[("vllm-sleep1", 2)]
        await wait_for(pilot, lambda: abs(app.snapshot.replay.position - (t - events[0].t)) < 1e-6
                       and app.snapshot.settled, what="seek back to step 2")
        await pilot.pause(0.6)  # a log flush
        want = [format_line(LogLine(e.source, e.line)) for e in events
                if isinstance(e, Log) and e.run == "vllm-sleep1" and e.t <= t]
        assert first.text().splitlines() == want
        assert "step 2 offload done" not in first.text() and "step 1 reload done" in first.text()
        assert first.log_widget.lines == want  # what the open pane shows
        assert panes["sglang-release"].text() == ""  # that run has not started at the playhead
        # and forward again: the lines come back
        await pilot.press("right_curly_bracket")
        await wait_for(pilot, lambda: app.snapshot.replay.at_end and app.snapshot.settled, what="seek to the end")
        await pilot.pause(0.6)
        assert "step 3 reload done" in first.text()
