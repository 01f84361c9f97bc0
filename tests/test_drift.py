"""The foreign-load witness: the host sampler with real processes, the per-step fold, the flags, the caveat lines
and the design line in every report; old sessions stay readable and unflagged."""

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from sgtui import drift, host
from sgtui.events import GpuSample, HostSample, Phase, RunEnd, RunStart, SessionHeader, decode, encode
from sgtui.export import load_sessions, render
from sgtui.session import read_session
from sgtui.state import SessionState

REPO = Path(__file__).resolve().parent.parent
SPIN = [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 6: pass"]

STAT = """cpu  900 0 100 5000 0 0 0 0 0 0
cpu0 100 0 50 1000 20 0 0 0 0 0
cpu1 800 0 50 4000 0 5 5 0 0 0
intr 1 2 3
"""


def test_cpu_ticks_counts_only_the_allowed_cpus_and_not_idle_or_iowait():
    assert host.cpu_ticks(STAT, frozenset({0})) == (150, 1170)
    assert host.cpu_ticks(STAT, frozenset({0, 1})) == (150 + 860, 1170 + 4860)


def test_a_new_process_counts_in_full_only_if_it_started_after_the_last_scan():
    prev = host.ProcTicks({1: (100, 50), 2: (100, 70)})
    cur = host.ProcTicks({1: (100, 80), 2: (900, 5), 3: (2000, 40), 4: (50, 999)})
    # 1: 30 more; 2: pid reused by a process started after the scan (tick 900 >= 800); 3: new, counts;
    # 4: older than the scan but not seen before (its group announced late): baseline only
    assert host.own_ticks_delta(prev, cur, since_tick=800) == {1: 30, 2: 5, 3: 40}


def test_sampler_attributes_a_run_group_to_its_run_and_leaves_the_rest_foreign():
    mine = subprocess.Popen(SPIN, start_new_session=True)
    other = subprocess.Popen(SPIN, start_new_session=True)
    out: list[HostSample] = []
    sampler = host.HostSampler(out.append, lambda: {mine.pid: "run-a"}, interval=0.5)
    try:
        time.sleep(0.3)  # interpreter start-up
        sampler.start()
        time.sleep(2.8)
    finally:
        sampler.stop()
        sampler.join(2)
        for p in (mine, other):
            os.killpg(p.pid, 9)
            p.wait()
    assert len(out) >= 4 and all(s.error == "" and 0.4 < s.window < 0.7 for s in out)
    assert all(s.cores == len(os.sched_getaffinity(0)) for s in out)
    later = out[1:]  # each spinner takes up to a core (two cores here, shared with whatever else runs)
    assert sum(s.own.get("run-a", 0.0) for s in later) / len(later) > 0.3
    # the other spinner is nobody's: it shows only in busy, never in own
    assert all(set(s.own) <= {"run-a", host.SELF_LABEL} for s in out)
    assert all(s.busy_cores + 0.15 >= sum(s.own.values()) for s in out)
    assert sum(s.busy_cores - sum(s.own.values()) for s in later) / len(later) > 0.3


def _session(tmp_path, extra, *, witness=True, header_config=None):
    """A crafted session: run a on GPU 0, steps 1-3 of 10 s each from t=1000."""
    t0 = 1000.0
    ev = [SessionHeader(t=t0 - 10, config=header_config or {"design": "sequential"}),
          RunStart(t=t0 - 5, run="a", backend="vllm", strategy="sleep1", device="cuda", gpus=[0],
                   config={"train_gpus": [0]})]
    for n in (1, 2, 3):
        s = t0 + 10 * (n - 1)
        for i, name in enumerate(("rollout", "offload", "train", "reload", "weight_sync")):
            ev += [Phase(t=s + 2 * i, run="a", step=n, name=name, edge="start"),
                   Phase(t=s + 2 * i + 1.9, run="a", step=n, name=name, edge="end")]
    ev.append(RunEnd(t=t0 + 31, run="a", status="ok"))
    if witness:
        for k in range(40):  # 1 s samples; 1.4 foreign cores during step 2 (t 1010-1020), 0.1 otherwise
            t = t0 - 4 + k
            busy = 2.0 if 1011 <= t <= 1019 else 0.7
            ev.append(HostSample(t=t, window=1.0, cores=4, busy_cores=busy, own={"a": 0.5, "sgtui": 0.1}))
    ev += extra
    ev.sort(key=lambda e: e.t)
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(encode(e) for e in ev))
    return path


def _gpu(t, procs):
    return GpuSample(t=t, devices=[{"index": 0, "name": "H100", "used_mib": 9000.0, "total_mib": 81000.0, "util": 50},
                                   {"index": 1, "name": "H100", "used_mib": 9000.0, "total_mib": 81000.0, "util": 0}],
                     processes=procs)


ENGINE = {"pid": 10, "device": 0, "used_mib": 8000.0, "run": "a", "role": "engine"}


def _gpu_samples(foreign_at):
    out = []
    for k in range(0, 32):
        t = 1000.0 + k
        procs = [ENGINE] + [p for at, p in foreign_at if at[0] <= t <= at[1]]
        out.append(_gpu(t, procs))
    return out


def test_steps_touched_by_foreign_cpu_or_gpu_processes_are_flagged(tmp_path):
    foreign = {"pid": 77, "device": 0, "used_mib": 2048.0, "run": "other"}
    elsewhere = {"pid": 78, "device": 1, "used_mib": 4096.0, "run": "other"}  # a GPU the run does not use
    rank = {"pid": 79, "device": 0, "used_mib": 3000.0, "run": "other"}  # a trainer rank before its announcement
    rank_later = {**rank, "run": "a", "role": "trainer"}
    path = _session(tmp_path, _gpu_samples([((1024, 1026), foreign), ((1000, 1031), elsewhere),
                                            ((1003, 1004), rank), ((1005, 1006), rank_later)]))
    st = load_sessions([path])[0]
    s = st.summary("a")
    d1, d2, d3 = (x.drift for x in s.steps)
    assert d1.samples >= 10 and abs(d1.foreign_cpu_mean - 0.1) < 1e-6 and d1.gpu_foreign_procs == 0
    assert d2.foreign_cpu_max == 1.4 and 0.9 < d2.foreign_cpu_mean < 1.4 and d2.cores == 4
    assert d3.gpu_foreign_procs == 1 and d3.gpu_foreign_mib == 2048.0
    assert drift.flagged_steps(s) == ((2, f"{d2.foreign_cpu_mean:.1f} foreign CPU cores of 4"),
                                      (3, "1 foreign GPU process (2,048 MiB)"))
    (line,) = drift.drift_caveats([s])
    assert line == (f"a: steps 2, 3 ran beside foreign load (up to {d2.foreign_cpu_mean:.1f} foreign CPU cores of 4; "
                    "up to 1 foreign GPU process, 2,048 MiB): their numbers may be slower than the engine is")


def test_threshold_is_half_a_core_or_a_tenth_of_the_cpus():
    assert drift.cpu_threshold(2) == 0.5 and drift.cpu_threshold(16) == 1.6
    quiet = drift.StepDrift(5, 16, 1.2, 3.0, 0, 0.0)
    assert drift.step_flag(quiet) == "" and drift.step_flag(drift.StepDrift(5, 2, 0.6, 0.9, 0, 0.0))


def test_no_witness_means_no_flag_not_a_clean_step(tmp_path):
    """Sessions before the witness: no host samples, and their "other" GPU processes were our own trainer
    ranks (not attributed then): nothing is flagged and the steps' drift is unknown."""
    foreign = {"pid": 77, "device": 0, "used_mib": 2048.0, "run": "other"}
    st = load_sessions([_session(tmp_path, _gpu_samples([((1000, 1031), foreign)]), witness=False)])[0]
    s = st.summary("a")
    assert all(x.drift is None for x in s.steps) and drift.drift_caveats([s]) == ()


def test_gpu_processes_from_another_pid_namespace_are_unknown_not_foreign(tmp_path):
    """NVML PIDs that never map to a run (a container's PID namespace): even the engine reads as "other"."""
    unmapped = [_gpu(1000.0 + k, [{**ENGINE, "run": "other"}]) for k in range(32)]
    s = load_sessions([_session(tmp_path, unmapped)])[0].summary("a")
    assert all(x.drift.gpu_foreign_procs is None for x in s.steps)
    assert drift.flagged_steps(s) == ((2, f"{s.steps[1].drift.foreign_cpu_mean:.1f} foreign CPU cores of 4"),)


def test_every_report_lists_the_flagged_steps_and_the_design(tmp_path):
    path = _session(tmp_path, [], header_config={"design": "interleaved", "interleave": True})
    states = load_sessions([path])
    txt, md, js = (render(f, states) for f in ("txt", "md", "json"))
    caveat = "a: step 2 ran beside foreign load"
    assert "design: single run (one run)" in txt  # one run: nothing alternated
    assert caveat in " ".join(txt.split()) and caveat in md
    doc = orjson.loads(js)
    assert doc["runs"][0]["drift_flagged_steps"][0]["step"] == 2
    assert doc["runs"][0]["steps"][1]["drift"]["foreign_cpu_max"] == 1.4
    assert any(c.startswith(caveat) for c in doc["verdict"]["caveats"]) and doc["designs"][0]["design"] == "single run"
    # once: the verdict carries it and the reports print the verdict's caveats
    assert " ".join(txt.split()).count(caveat) == 1 and md.count(caveat) == 1


def test_design_from_the_header_or_inferred_for_old_sessions():
    def state(config, spans):
        st = SessionState()
        st.apply(SessionHeader(t=0.0, config=config))
        for label, (a, b) in spans.items():
            st.apply(RunStart(t=a, run=label, backend="vllm"))
            st.apply(RunEnd(t=b, run=label))
        return st

    two = {"a": (1.0, 5.0), "b": (6.0, 9.0)}
    assert drift.session_design(state({"design": "interleaved"}, two)) == ("interleaved", False)
    assert drift.session_design(state({}, two)) == ("sequential", True)
    assert drift.session_design(state({}, {"a": (1.0, 5.0), "b": (4.0, 9.0)})) == ("concurrent", True)
    assert drift.design_line(state({"design": "concurrent"}, two)) == \
        "design: concurrent (runs at once, sharing the machine)"


def test_old_sessions_read_unflagged_with_an_inferred_design():
    for path in sorted((REPO / "sessions").glob("*.jsonl")):
        st = load_sessions([path])[0]
        if st.gpu.host.samples:  # recorded with the witness
            continue
        assert drift.drift_caveats(st.summary(r) for r in st.runs if st.runs[r].info) == (), path
        assert drift.session_design(st)[0] in ("sequential", "concurrent", "interleaved", "single run")
        if st.header is None or "design" not in st.header.config:
            assert "inferred from the run times" in drift.design_line(st) or len(st.runs) == 1


def test_host_event_round_trips_and_a_session_with_it_reads(tmp_path):
    e = HostSample(t=5.0, window=1.0, cores=2, busy_cores=1.5, own={"a": 0.5})
    assert decode(encode(e)) == e
    path = tmp_path / "s.jsonl"
    path.write_bytes(encode(SessionHeader(t=1.0)) + encode(e))
    res = read_session(path)
    assert res.problems == [] and res.events[-1] == e


def test_the_committed_interleaved_cpu_session_has_its_witness_and_design():
    (path,) = (REPO / "sessions").glob("*-interleaved-cpu.jsonl")
    st = load_sessions([path])[0]
    assert drift.session_design(st) == ("interleaved", False) and st.problems == []
    assert all(s.drift is not None and s.drift.samples for r in st.runs for s in st.summary(r).steps)
    assert "design: interleaved" in render("txt", [st])
