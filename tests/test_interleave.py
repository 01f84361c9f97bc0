"""--interleave's turn logic with stand-in runners (tests/fixtures/fake_runner.py, modes turns*): the orchestrator
hands out turn 0 (setup) to each run in order, then one step at a time, the next turn once the last one parked;
a crashed runner gets no more turns and the other goes on; cancel and SIGTERM leave a readable session and no
process. The same protocol with the real engines: tests/test_interleave_engines.py."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sgtui.config import RunConfig
from sgtui.events import Phase, RunEnd
from sgtui.orchestrator import REPO_ROOT, Orchestrator
from sgtui.session import read_session
from sgtui.turns import NoTurn, ProtocolError, Turns, parse_turn, turn_line
from tests.test_orchestrator import FAKE, alive

STEPS = 2


def make(tmp_path, modes, **kw):
    runs = [RunConfig(label=f"r{i}-{m}", backend="vllm", strategy="sleep1", num_steps=STEPS,
                      workdir=str(tmp_path / f"w{i}"), port=9100 + i) for i, m in enumerate(modes)]
    mode_of = {r.label: m for r, m in zip(runs, modes)}
    os.environ["SGTUI_REPO"] = str(REPO_ROOT)
    return Orchestrator(runs, tmp_path / "s.jsonl", sample_gpus=False, grace=kw.pop("grace", 3.0), interleave=True,
                        runner_argv=lambda c: [sys.executable, str(FAKE), mode_of[c.label], c.label], **kw)


def turns_in_order(events):
    """(run, turn) of each turn as it happened: a turn is the span of a run's consecutive events."""
    out = []
    for e in events:
        if not isinstance(e, Phase) or e.name in ("startup",):
            continue
        turn = e.step if e.step else (0 if e.name == "warmup" else None)
        key = (e.run, turn)
        if turn is not None and (not out or out[-1] != key):
            out.append(key)
    return out


def step_spans(events, run):
    spans = {}
    for e in events:
        if isinstance(e, Phase) and e.run == run and e.step:
            lo, hi = spans.get(e.step, (e.t, e.t))
            spans[e.step] = (min(lo, e.t), max(hi, e.t))
    return spans


def test_runs_take_turns_step_by_step_and_the_header_says_interleaved(tmp_path):
    orch = make(tmp_path, ["turns", "turns"])
    assert orch.run_sync() == {"r0-turns": "ok", "r1-turns": "ok"}
    res = read_session(tmp_path / "s.jsonl")
    assert res.problems == []
    assert res.header.config["design"] == "interleaved" and res.header.config["interleave"] is True
    assert turns_in_order(res.events) == [("r0-turns", 0), ("r1-turns", 0), ("r0-turns", 1), ("r1-turns", 1),
                                          ("r0-turns", 2), ("r1-turns", 2)]
    a, b = step_spans(res.events, "r0-turns"), step_spans(res.events, "r1-turns")
    # one run inside a step at a time: A1 < B1 < A2 < B2, none overlapping
    order = [a[1], b[1], a[2], b[2]]
    assert all(x[1] <= y[0] for x, y in zip(order, order[1:])), order
    # the next turn starts only once the last one's park ended
    parks = [e for e in res.events if isinstance(e, Phase) and e.name == "park" and e.edge == "end"]
    assert len(parks) == 4  # setup and step 1 of each run; the last step ends with run_end instead
    for p in parks:
        later = [e for e in res.events if isinstance(e, Phase) and e.run != p.run and e.t > p.t]
        assert later, p


def test_a_crashed_runner_gets_no_more_turns_and_the_other_goes_on(tmp_path):
    orch = make(tmp_path, ["turns_crash", "turns"])
    t0 = time.monotonic()
    assert orch.run_sync() == {"r0-turns_crash": "failed", "r1-turns": "ok"}
    assert time.monotonic() - t0 < 20
    events = read_session(tmp_path / "s.jsonl").events
    assert set(step_spans(events, "r1-turns")) == {1, 2}
    assert set(step_spans(events, "r0-turns_crash")) == {1}  # rollout started, then the runner died
    # r1 took its step 1 only after r0's crash was handled (its group stopped)
    crash_end = next(e.t for e in events if isinstance(e, RunEnd) and e.run == "r0-turns_crash")
    assert step_spans(events, "r1-turns")[1][0] >= crash_end


def test_cancel_while_a_run_waits_for_its_turn_leaves_no_process(tmp_path):
    orch = make(tmp_path, ["turns", "turns"])
    pids = []

    def cancel_in_step_1():
        while not any(h.proc is not None for h in orch.handles):
            time.sleep(0.01)
        pids.extend(h.proc.pid for h in orch.handles if h.proc is not None)
        for _ in range(400):  # r0 at its step 1: r1 waits for its turn
            if orch.handles[0].turn_over is not None and any(
                    isinstance(e, Phase) and e.step == 1 for e in read_session(tmp_path / "s.jsonl").events):
                break
            time.sleep(0.01)
        pids.extend(h.proc.pid for h in orch.handles if h.proc is not None and h.proc.pid not in pids)
        orch.cancel()

    threading.Thread(target=cancel_in_step_1, daemon=True).start()
    statuses = orch.run_sync()
    assert set(statuses.values()) <= {"cancelled", "ok"} and "cancelled" in statuses.values()
    res = read_session(tmp_path / "s.jsonl")
    assert res.problems == [] and {e.run for e in res.events if isinstance(e, RunEnd)} == set(statuses)
    time.sleep(0.2)
    assert pids and not any(alive(p) for p in pids)


def test_sigterm_to_a_headless_interleaved_session_ends_it_readable(tmp_path):
    """The real CLI path (`sgtui --no-ui --interleave`) with stand-in runners: SIGTERM while runs wait for turns."""
    out = tmp_path / "sessions"
    env = {**os.environ, "SGTUI_REPO": str(REPO_ROOT), "SGTUI_FAKE_MODE": "turns", "SGTUI_TEST_PYTHON": sys.executable}
    standin = REPO_ROOT / "tests" / "fixtures" / "standin_python.sh"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cmd = [sys.executable, "-m", "sgtui.cli", "--no-ui", "--interleave", "--skip-preflight", "--run",
           f"vllm:sleep1@{standin}", "--run", f"sglang:release@{standin}", "--model", str(model), "-o", str(out),
           "--export", "txt", "--num-steps", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(out.glob("*.jsonl")):
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (path,) = out.glob("*.jsonl")
    res = read_session(path)
    assert res.problems == [] and res.header.config["design"] == "interleaved", err.decode()[-2000:]
    ends = {e.run: e.status for e in res.events if isinstance(e, RunEnd)}
    assert set(ends) == {"vllm-sleep1", "sglang-release"}, err.decode()[-2000:]
    assert "design: interleaved" in path.with_suffix(".txt").read_text()


def test_interleave_and_concurrent_exclude_each_other(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sgtui.cli", "--no-ui", "--interleave", "--concurrent", "-o",
                        str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "--interleave and --concurrent exclude each other" in r.stderr
    with pytest.raises(ValueError):
        Orchestrator([], tmp_path / "s.jsonl", concurrent=True, interleave=True)


def test_distinct_ports_for_servers_up_at_once():
    from sgtui.orchestrator import distinct_ports

    runs = [RunConfig(label=x, backend="vllm", strategy="sleep1", port=8100) for x in "abc"]
    distinct_ports(runs)
    assert [r.port for r in runs] == [8100, 8101, 8102]


async def test_runner_side_reads_its_turns_and_ends_on_eof():
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as stream:
        turns = Turns(stream)
        os.write(w, turn_line(0) + turn_line(1) + b"turn 3\n")
        await turns.wait(0)
        await turns.wait(1)
        with pytest.raises(ProtocolError):
            await turns.wait(2)
        os.close(w)
        with pytest.raises(NoTurn):
            await turns.wait(2)
    assert parse_turn(b"turn 12\n") == 12
    with pytest.raises(ProtocolError):
        parse_turn(b"go\n")
