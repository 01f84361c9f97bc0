"""`sgtui --no-ui --interleave` on the real vLLM and SGLang CPU servers (inference mode, 2 steps, 4 rollouts):
the runs' steps alternate in time, both servers stay up with the idle one parked, engines start one at a time,
every step carries its foreign-load witness, the report names the design, and nothing is left running.
The turn logic itself, with stand-in runners: tests/test_interleave.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgtui import drift
from sgtui.events import HostSample, Phase, Proc, Request, RunEnd
from sgtui.export import load_sessions
from sgtui.session import read_session
from tests.engines import free_port, needs_sglang, needs_vllm, port_is_free
from tests.faults.harness import session_processes

pytestmark = [pytest.mark.engine, needs_vllm, needs_sglang]
REPO = Path(__file__).resolve().parent.parent
RUNS = ("vllm-sleep1", "sglang-release")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("sessions")
    vport, sport = free_port(), free_port()
    cmd = [sys.executable, "-m", "sgtui.cli", "--no-ui", "--interleave", "--run", "vllm:sleep1",
           "--run", "sglang:release", "--num-steps", "2", "--num-rollouts", "4", "--concurrency", "4",
           "--max-output-tokens", "16", "--max-input-tokens", "32", "--sim-train-seconds", "0.5",
           "--vllm-port", str(vport), "--sglang-port", str(sport), "-o", str(out), "--export", "txt,md,json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    sessions = list(out.glob("*.jsonl"))
    return r, sessions[0] if sessions else None, (vport, sport)


def spans(events, run, step):
    ts = [e.t for e in events if isinstance(e, Phase) and e.run == run and e.step == step]
    return min(ts), max(ts)


def test_exit_code_header_and_every_request_ok(session):
    r, path, _ = session
    assert r.returncode == 0, r.stderr[-3000:]
    res = read_session(path)
    assert res.problems == [] and res.header.config["design"] == "interleaved"
    assert {e.run: e.status for e in res.events if isinstance(e, RunEnd)} == dict.fromkeys(RUNS, "ok")
    for run in RUNS:
        reqs = [e for e in res.events if isinstance(e, Request) and e.run == run]
        assert len(reqs) == 8 and not any(e.error for e in reqs)


def test_steps_alternate_and_engines_start_one_at_a_time(session):
    _, path, _ = session
    events = read_session(path).events
    a1, b1, a2, b2 = (spans(events, run, n) for n in (1, 2) for run in RUNS)
    order = [a1, b1, a2, b2]
    assert all(x[1] <= y[0] for x, y in zip(order, order[1:])), order
    # SGLang's startup began only after vLLM's setup turn ended with its park
    park = next(e.t for e in events if isinstance(e, Phase) and e.run == RUNS[0] and e.name == "park"
                and e.edge == "end")
    start = next(e.t for e in events if isinstance(e, Phase) and e.run == RUNS[1] and e.name == "startup")
    assert start >= park


def test_both_servers_stay_up_and_the_idle_one_is_parked_by_its_own_offload(session):
    _, path, _ = session
    events = read_session(path).events
    starts = [e for e in events if isinstance(e, Proc) and e.role == "engine" and e.action == "start"]
    assert sorted(e.run for e in starts) == sorted(RUNS)  # one server each, never restarted
    for run, detail in (("vllm-sleep1", "sleep level 1"), ("sglang-release", "release_memory_occupation")):
        parks = [e for e in events if isinstance(e, Phase) and e.run == run and e.name == "park" and e.edge == "end"]
        unparks = [e for e in events if isinstance(e, Phase) and e.run == run and e.name == "unpark"
                   and e.edge == "end"]
        assert len(parks) == 2 and len(unparks) == 2 and all(e.ok and e.step == 0 for e in parks + unparks)
        assert all(e.detail.startswith(detail) for e in parks), [e.detail for e in parks]
    # vLLM slept while SGLang took its step 1 (and the other way round)
    b1 = spans(events, "sglang-release", 1)
    edges = [e for e in events if isinstance(e, Phase) and e.run == "vllm-sleep1" and e.name in ("park", "unpark")
             and e.edge == "end"]
    before = [e for e in edges if e.t <= b1[0]]
    assert before and before[-1].name == "park" and not any(b1[0] <= e.t <= b1[1] for e in edges)


def test_every_step_has_its_witness_and_the_report_names_the_design(session):
    _, path, _ = session
    assert sum(isinstance(e, HostSample) for e in read_session(path).events) >= 10
    st = load_sessions([path])[0]
    for run in RUNS:
        for s in st.summary(run).steps:
            assert s.drift is not None and s.drift.samples >= 1 and s.drift.cores >= 1
            assert s.drift.foreign_cpu_mean is not None and s.drift.peer_cpu_mean is not None
    assert drift.session_design(st) == ("interleaved", False)
    for ext in (".txt", ".md"):
        assert "design: interleaved" in path.with_suffix(ext).read_text()
    assert '"design": "interleaved"' in path.with_suffix(".json").read_text()


def test_nothing_left_running_and_ports_free(session):
    _, path, ports = session
    pgids = {e.pgid for e in read_session(path).events if isinstance(e, Proc)}
    for pg in pgids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pg, 0)
    assert all(port_is_free(p) for p in ports)
    assert session_processes(path) == []
