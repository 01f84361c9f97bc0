"""Faults during a run, on the real orchestrator and runner with the FAULT-INJECTION vLLM stand-in
(fault_python.sh): the engine dies during offload or reload, the trainer crashes, the runner is killed -9,
the session's disk fills up, the sessions dir is unwritable, a second sgtui wants the same ports.

The stand-in engine is used because the fault is not the engine's own doing (runner, trainer, disk,
a second sgtui), or because a real vLLM on CPU offloads and reloads in milliseconds (no way to kill
it *during* /sleep or /wake_up on demand); it answers /sleep or /wake_up slowly by a chosen amount.
"""

from __future__ import annotations

import os
import resource
import signal
import socket


from sgtui.events import Request
from sgtui.session import read_session
from tests.engines import free_port, needs_vllm
from tests.faults.harness import (SHIM, SMALL, Watch, assert_left_clean, assert_prefix_kept, assert_readable, ends,
                                  errors, fault, fault_env, kill_group, model_dir, reap, session_in, sgtui, start)

pytestmark = [needs_vllm]


def run_args(tmp_path, port, *extra, model=None):
    return ["--no-ui", "--run", f"vllm:sleep1@{SHIM}", "--model", str(model or model_dir(tmp_path)),
            "--vllm-port", str(port), "-o", str(tmp_path / "sessions"), "--skip-preflight", *SMALL, *extra]


def kill_engine_during(tmp_path, observed, phase: str, endpoint: str):
    port = free_port()
    proc = start(*run_args(tmp_path, port), env=fault_env({"delays": {endpoint: 60}}), out=tmp_path / "cli")
    session = session_in(tmp_path / "sessions")
    w = Watch(session)
    pgid = w.engine_pgid()
    w.phase(phase, "start", step=1)
    before = w.snapshot()
    kill_group(pgid, signal.SIGKILL)
    rc = reap(proc)
    assert rc == 1
    res = assert_readable(session)
    assert_prefix_kept(session, before)
    assert ends(session) == {"vllm-sleep1": "failed"}
    errs = errors(session)
    end = [e for e in res.events if e.kind == "phase" and e.name == phase and e.edge == "end"]
    assert end and end[0].ok is False, f"the {phase} phase must end not-ok"
    assert errs and errs[0].category == "SERVER_CRASH", [(e.category, e.message) for e in errs]
    assert_left_clean(session, [port])
    observed(f"exit {rc}; {phase} ended ok=False; error {errs[0].category}: {errs[0].message[:70]}; "
             "run_end failed; nothing left, port free")


@fault("engine killed during offload", "run_end failed, SERVER_CRASH, offload phase not ok, nothing left")
def test_engine_killed_during_offload(tmp_path, observed):
    kill_engine_during(tmp_path, observed, "offload", "/sleep")


@fault("engine killed during reload", "run_end failed, SERVER_CRASH, reload phase not ok, nothing left")
def test_engine_killed_during_reload(tmp_path, observed):
    kill_engine_during(tmp_path, observed, "reload", "/wake_up")


@fault("trainer crash (simulated trainer cannot allocate its memory)",
       "run_end failed with the trainer's error (OOM), engine stopped, nothing left")
def test_trainer_crash(tmp_path, observed):
    """A real allocation failure: the simulated trainer asks for 1 PiB (MemoryError at once on any host)."""
    port = free_port()
    r = sgtui(*run_args(tmp_path, port, "--sim-train-mib", str(2**30)), env=fault_env())
    session = session_in(tmp_path / "sessions")
    assert r.returncode == 1, r.stderr
    assert_readable(session)
    assert ends(session) == {"vllm-sleep1": "failed"}
    errs = errors(session)
    train_end = [e for e in read_session(session).events if e.kind == "phase" and e.name == "train"
                 and e.edge == "end"]
    assert train_end and not train_end[0].ok
    assert_left_clean(session, [port])
    observed(f"exit 1; train ended ok=False; error {errs[0].category}: {errs[0].message[:60]}; nothing left")
    assert errs[0].category in ("OOM", "TRAINER"), (
        f"the trainer's MemoryError is recorded as {errs[0].category}: {errs[0].message}")


@fault("runner killed -9", "run_end failed ('killed by signal 9'), engine group torn down, port free")
def test_runner_killed_9(tmp_path, observed):
    port = free_port()
    proc = start(*run_args(tmp_path, port, "--sim-train-seconds", "60"), env=fault_env(), out=tmp_path / "cli")
    session = session_in(tmp_path / "sessions")
    w = Watch(session)
    runner = w.runner_pid()
    w.engine_pgid()
    w.phase("train", "start", step=1)
    before = w.snapshot()
    os.kill(runner, signal.SIGKILL)
    rc = reap(proc)
    assert rc == 1
    assert_readable(session)
    assert_prefix_kept(session, before)
    assert ends(session) == {"vllm-sleep1": "failed"}
    err = errors(session)[0]
    assert "killed by signal 9" in err.message
    assert_left_clean(session, [port])
    observed(f"exit 1; error {err.category}: {err.message}; engine group stopped by the orchestrator; port free")


@fault("disk full during the run (RLIMIT_FSIZE on sgtui: writes past 48 KiB fail with EFBIG)",
       "one clear error naming the session, runs stopped, nothing left, what was written stays readable")
def test_session_write_fails_mid_run(tmp_path, observed):
    """A real kernel write failure on the real session file: the file size limit is set on the sgtui process
    (children inherit it; their files stay far below it: no adapter copies, short logs)."""
    port = free_port()
    limit = 48 * 1024

    def limit_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = run_args(tmp_path, port, "--num-steps", "3", "--num-rollouts", "64", "--concurrency", "8",
                    "--max-output-tokens", "64", model=model_dir(tmp_path, adapters=False))
    r = sgtui(*args, env=fault_env(), preexec_fn=limit_files)
    session = session_in(tmp_path / "sessions")
    assert r.returncode == 1
    line = [ln for ln in r.stderr.splitlines() if "cannot write session" in ln]
    assert line and str(session) in line[0] and "File too large" in line[0] and "runs were stopped" in line[0], r.stderr
    res = assert_readable(session)
    size = session.stat().st_size
    assert size <= limit
    assert any(isinstance(e, Request) for e in res.events)
    assert_left_clean(session, [port])
    observed(f"exit 1; stderr: {line[0][:110]}; session {size} B readable ({len(res.events)} events, "
             f"{len(res.problems)} problem line(s)); nothing left, port free")


@fault("sessions dir unwritable (before the run)", "one-line error naming --output, exit 2, nothing started")
def test_sessions_dir_unwritable(tmp_path, observed):
    afile = tmp_path / "afile"
    afile.write_text("")
    port = free_port()
    args = ["--no-ui", "--run", f"vllm:sleep1@{SHIM}", "--model", str(model_dir(tmp_path)), "--vllm-port",
            str(port), "-o", str(afile / "sessions"), *SMALL]
    r = sgtui(*args, env=fault_env())
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("sgtui: error: --output") and "not writable" in lines[0]
    assert port_unused(port)
    observed(f"exit 2; {lines[0]}")


def port_unused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@fault("two sgtui instances on the same ports",
       "the second refuses at once with one line naming the first's pid and session; the first runs on")
def test_second_instance_on_the_same_port_refuses(tmp_path, observed):
    port = free_port()
    first = start(*run_args(tmp_path / "a", port, "--sim-train-seconds", "60"), env=fault_env(),
                  out=tmp_path / "a" / "cli")
    session = session_in(tmp_path / "a" / "sessions")
    w = Watch(session)
    w.runner_pid()  # the first holds its port lock from before its header (before its engine binds)
    try:
        args = [a for a in run_args(tmp_path / "b", port) if a != "--skip-preflight"]
        second = sgtui(*args, env=fault_env())
        assert second.returncode == 2
        msg = second.stderr.strip().splitlines()
        assert len(msg) == 1 and msg[0].startswith(f"sgtui: preflight: port {port}: port {port} is taken by another "
                                                   f"sgtui (pid {first.pid}"), second.stderr
        assert str(session) in msg[0]
        assert not list((tmp_path / "b" / "sessions").glob("*.jsonl")), "the refused sgtui wrote a session"
        # with --skip-preflight the orchestrator itself refuses, before creating anything
        third = sgtui(*run_args(tmp_path / "c", port), env=fault_env())
        msg3 = third.stderr.strip().splitlines()
        assert third.returncode == 2 and len(msg3) == 1, third.stderr
        assert msg3[0].startswith(f"sgtui: error: port {port} is taken by another sgtui (pid {first.pid}")
        assert not list((tmp_path / "c" / "sessions").glob("*.jsonl"))
        assert first.poll() is None and ends(session) == {}
        # and the first is stopped cleanly by `sgtui stop`, which waits and reports
        stop = sgtui("stop", str(session))
        assert stop.returncode == 0, stop.stderr
        assert "cancelled" in stop.stdout
    finally:
        if first.poll() is None:
            first.terminate()
        reap(first)
    assert ends(session) == {"vllm-sleep1": "cancelled"}
    assert_left_clean(session, [port])
    observed(f"second: exit 2, {msg[0][:120]}; with --skip-preflight: exit 2, no session; first: stopped by "
             f"`sgtui stop` -> {stop.stdout.strip().split('  ')[1]}")
