"""Issue 14 (Use): run labels short, unique and the report's, with a legend; columns that never run off the
screen; timeline labels that never overlap and lanes that fit 80x24; the GPU marker row explained; a dead
session's replay says DEAD. Pure layout functions first, then what a person sees (Pilot)."""

from __future__ import annotations

import random
import re
from pathlib import Path

from gen_session import DEFAULT_RUNS, generate, six_runs, write_session
from sgtui.export import combined, load_sessions, render
from sgtui.labels import elide, legend, run_labels
from sgtui.tui.app import make_app
from sgtui.tui.widgets.gpu_panel import GpuPanel
from sgtui.tui.widgets.metrics_table import LABEL_WIDTH, MIN_COL, MetricsTable, table_layout
from sgtui.tui.widgets.timeline import Timeline, choose_columns, layout_lane, render_lane
from sgtui.viewmodel.views import SpanView
from test_tui_robust import crashed_session, dead_pid
from tui_helpers import screen_text, settled, wait_for


# -- labels ---------------------------------------------------------------------------------------------
def test_one_session_keeps_its_labels():
    assert run_labels([["vllm-sleep1", "sglang-release"]]) == [["vllm-sleep1", "sglang-release"]]


def test_colliding_labels_get_their_session_tag_and_the_rest_stay_short():
    got = run_labels([["vllm-sleep1", "sglang-release"], ["vllm-sleep1"], ["vllm-sleep1#2", "x"]])
    assert got == [["vllm-sleep1#1", "sglang-release"], ["vllm-sleep1#2"], ["vllm-sleep1#2'", "x"]]
    flat = [k for keys in got for k in keys]
    assert len(set(flat)) == len(flat)  # a run named like another's tag still gets a key of its own


def test_legend_names_each_tag_once_and_nothing_for_one_session():
    assert legend(["sessions/2024-05-01-a.jsonl", "/x/b.jsonl"]) == [("#1", "2024-05-01-a.jsonl"), ("#2", "b.jsonl")]
    assert legend(["a.jsonl"]) == []


def test_elide_keeps_the_tag_and_both_ends():
    assert elide("sglang-release-lora#2", 12) == "sg-r…-lora#2"
    assert elide("vllm-sleep1#12", 9) == "v-…ep1#12"
    assert elide("vllm-sleep1", 20) == "vllm-sleep1"
    for w in range(1, 25):
        assert len(elide("sglang-release-lora#2", w)) <= w


def test_table_columns_narrow_then_wrap_never_past_the_edge():
    for n in range(1, 30):
        for width in (40, 60, 78, 117, 196):
            cw, per_block = table_layout(n, width)
            assert cw >= MIN_COL and 1 <= per_block <= n
            assert per_block == 1 or LABEL_WIDTH + per_block * (cw + 1) <= width, (n, width, cw, per_block)
    assert table_layout(6, 117)[1] == 6  # six runs beside the timeline at 200x50: one block


def _two_sessions(tmp_path: Path) -> list[Path]:
    return [write_session(tmp_path / "2024-05-01-vllm-sleep1.jsonl", generate(seed=31)),
            write_session(tmp_path / "2024-05-02-vllm-sleep1.jsonl", generate(seed=32, runs=DEFAULT_RUNS[:1]))]


async def test_columns_are_named_as_the_report_names_runs_with_a_legend(tmp_path):
    paths = _two_sessions(tmp_path)
    report = combined(load_sessions(paths))
    app = make_app("replay", paths=paths, speed="max", playing=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: settled(app) and app.snapshot.replay.at_end)
        keys = [r.key for r in app.snapshot.runs]
        assert keys == [label for label, *_ in report.runs] == ["vllm-sleep1#1", "sglang-release", "vllm-sleep1#2"]
        text = screen_text(app)
        header = next(line for line in text.splitlines() if line.strip().startswith("metric"))
        assert header.split()[1:] == keys  # whole, not `202…eep1` twice
        assert "sessions:  #1 2024-05-01-vllm-sleep1.jsonl  #2 2024-05-02-vllm-sleep1.jsonl" in text
    txt = render("txt", load_sessions(paths))
    assert "session #2: " in txt and "vllm-sleep1#2" in txt
    assert "`#2` 2024-05-02-vllm-sleep1.jsonl" in render("md", load_sessions(paths))


async def test_six_runs_all_fit_at_200x50(tmp_path):
    path = write_session(tmp_path / "six.jsonl", generate(seed=33, runs=six_runs(), steps=2))
    app = make_app("replay", paths=[path], speed="max", playing=True)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: settled(app) and app.snapshot.replay.at_end)
        header = next(line for line in screen_text(app).splitlines() if line.strip().startswith("metric"))
        for spec in six_runs():  # the sixth, sglang-keep, was cut off at the pane's edge
            assert spec.label in header, (spec.label, header)


async def test_many_runs_wrap_into_blocks_at_80x24(tmp_path):
    runs = six_runs() + tuple(type(s)(s.label + "-b", s.backend, s.strategy, s.phases) for s in six_runs())
    path = write_session(tmp_path / "twelve.jsonl", generate(seed=34, runs=runs, steps=1))
    app = make_app("replay", paths=[path], speed="max", playing=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: settled(app) and app.snapshot.replay.at_end)
        table = app.screen.query_one(MetricsTable)
        lines = [t.plain for t in table.build_lines(table.size.width)]
        assert all(len(line) <= table.size.width for line in lines)
        heads = " ".join(line for line in lines if line.startswith("metric"))
        assert len(heads.split()) - heads.count("metric") == 12  # every column somewhere, none past the edge
        assert table.size.height == len(lines)


# -- timeline -------------------------------------------------------------------------------------------
def _spans(durations: list[tuple[str, float]]) -> list[SpanView]:
    out, t = [], 0.0
    for name, d in durations:
        out.append(SpanView(1, name, t, d, False, True, ""))
        t += d
    return out


def _labels_apart(spans: list[SpanView], width: int, scale: float) -> None:
    segs = layout_lane(spans, width, scale)
    for s, nxt in zip(segs, segs[1:]):
        assert s.a < s.b <= nxt.a, (s, nxt)  # never overlapping
    for i, s in enumerate(segs):
        room = s.b - s.a
        touching = i + 1 < len(segs) and segs[i + 1].a == s.b
        assert len(s.label) <= room - (1 if touching else 0), s  # a label ends before its neighbour's starts
    assert len(render_lane(spans, width, scale).plain) == width


def test_timeline_labels_never_run_into_each_other():
    # the lane that read `roll 14.13so7.28sls`: a long rollout, a short offload, train, reload, sync
    spans = _spans([("rollout", 14.13), ("offload", 0.4), ("train", 7.28), ("reload", 0.3), ("weight_sync", 0.2)])
    plain = render_lane(spans, 22, 22.31 / 22).plain
    assert "so" not in plain and "sl" not in plain, plain
    assert plain.startswith("roll 14.13s"), plain
    _labels_apart(spans, 22, 22.31 / 22)
    rnd = random.Random(7)
    names = ["rollout", "offload", "train", "reload", "weight_sync", "restart"]
    for _ in range(300):
        spans = _spans([(rnd.choice(names), rnd.choice([0.01, 0.2, 1.0, 3.5, 14.0]) * rnd.random())
                        for _ in range(rnd.randint(1, 6))])
        width = rnd.randint(1, 60)
        _labels_apart(spans, width, sum(s.duration for s in spans) / width or 1.0)


def test_timeline_goes_side_by_side_when_lanes_would_not_fit_the_screen():
    assert choose_columns([6, 6, 6, 6], 74, budget=21) == 2  # 80x24, two sessions of two runs
    assert choose_columns([6, 6, 6, 6], 74, budget=100) == 1  # room enough: full-width bars
    assert choose_columns([6] * 4, 30, budget=21) == 1  # too narrow for two blocks: one column, it scrolls


async def test_every_lane_of_two_sessions_shows_at_80x24(tmp_path):
    paths = [write_session(tmp_path / "a.jsonl", generate(seed=35)), write_session(tmp_path / "b.jsonl",
                                                                                   generate(seed=36))]
    app = make_app("replay", paths=paths, speed="max", playing=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: settled(app) and app.snapshot.replay.at_end)
        await pilot.press("tab")  # the table has the focus; Tab brings the timeline into view
        await pilot.pause(0.3)
        assert app.focused is not None and app.focused.id == "timeline-pane"
        text = screen_text(app)
        for lane in ("setup", "s1", "s2", "s3", "end"):  # every lane of all four runs, not only `setup`
            assert len(re.findall(rf"(?:^|\s){lane}\s", text)) >= 4, (lane, text)
        assert app.screen.query_one(Timeline).size.height <= 21


# -- GPU markers, dead sessions ---------------------------------------------------------------------------
async def test_gpu_marker_row_has_a_legend(tmp_path):
    path = write_session(tmp_path / "s.jsonl", generate(seed=37))
    app = make_app("replay", paths=[path], speed="max", playing=True)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: settled(app) and app.snapshot.replay.at_end)
        panel = app.screen.query_one(GpuPanel)
        lines = [t.plain for t in panel.build_lines(panel.size.width)]
        assert len(lines) == panel.size.height
        legend_line = next(line for line in lines if "phase starts" in line)
        marker_row = lines[lines.index(legend_line) - 1]
        for letter in set(marker_row.split()):  # every letter on the marker row is explained
            assert re.search(rf"\b{re.escape(letter)} [a-z]", legend_line), (letter, legend_line)
        assert "S startup" in legend_line and "t train" in legend_line
        listed = set(re.findall(r"  (\w) [a-z]", legend_line))
        assert listed and listed <= set(marker_row.replace(" ", ""))  # only the letters drawn are listed


async def test_replay_of_a_dead_session_says_dead_on_screen(tmp_path):
    events = crashed_session(dead_pid())
    path = write_session(tmp_path / "s.jsonl", events)
    app = make_app("replay", paths=[path], speed="max", playing=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: settled(app, len(events)) and bool(app.snapshot.dead))
        await pilot.pause(0.2)
        status = screen_text(app).splitlines()[0]
        assert " DEAD " in status, status
