"""The engine's own faults, on the real vLLM CPU server, through `sgtui` as a user runs it: the engine
exits at startup, never becomes healthy in time, finds its port taken, is killed mid-rollout.

(Moved here from tests/test_faults_vllm.py, which drove the runner alone: these go through the CLI and
the orchestrator and check what the user is left with, the session included.)
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from sgtui.events import Phase, Request
from tests.engines import TINY, VLLM_PY, free_port, needs_vllm
from tests.faults.harness import (SMALL, Watch, assert_left_clean, assert_prefix_kept, assert_readable, ends, errors,
                                  fault, kill_group, model_dir, reap, session_in, sgtui, start)

pytestmark = [pytest.mark.engine, needs_vllm]


def real_args(tmp_path, port, *extra, model=None, preflight=False):
    return ["--no-ui", "--run", f"vllm:sleep1@{VLLM_PY}", "--model", str(model or TINY), "--vllm-port", str(port),
            "-o", str(tmp_path / "sessions"), *([] if preflight else ["--skip-preflight"]), *SMALL, *extra]


@fault("engine exits at startup (real vLLM, a model architecture it does not know)",
       "run_end failed, MODEL_PATH, the engine's root cause in the error's log tail, nothing left, port free")
def test_engine_exits_at_startup(tmp_path, observed):
    """Cheapest real startup failure: vLLM exits in its API server while validating the config (about its
    import time), before any engine core starts. (A model without weights fails only after the engine core
    and worker start: minutes on a busy 2-core box.)"""
    port = free_port()
    r = sgtui(*real_args(tmp_path, port, model=model_dir(tmp_path, architecture="NoSuchArch")))
    session = session_in(tmp_path / "sessions")
    assert r.returncode == 1, r.stderr
    assert_readable(session)
    assert ends(session) == {"vllm-sleep1": "failed"}
    err = errors(session)[0]
    assert any("does not recognize this architecture" in line for line in err.log_tail), err.log_tail[-5:]
    assert_left_clean(session, [port])
    observed(f"exit 1; error {err.category}: {err.message[:70]}; the root cause is in its log tail; nothing left, "
             "port free")
    assert err.category == "MODEL_PATH" and "error [MODEL_PATH]" in r.stderr, (err.category, err.message)


@fault("startup timeout (real vLLM, --startup-timeout 2)",
       "run_end failed, STARTUP_TIMEOUT naming the limit, engine group stopped, port free")
def test_startup_timeout(tmp_path, observed):
    port = free_port()
    r = sgtui(*real_args(tmp_path, port, "--startup-timeout", "2"))
    session = session_in(tmp_path / "sessions")
    assert r.returncode == 1, r.stderr
    assert_readable(session)
    assert ends(session) == {"vllm-sleep1": "failed"}
    err = errors(session)[0]
    assert err.category == "STARTUP_TIMEOUT" and "not healthy within 2 s" in err.message
    assert_left_clean(session, [port])
    observed(f"exit 1; error {err.category}: {err.message[:80]}; nothing left, port free")


@fault("port taken by another program", "preflight refuses in one line naming the port and the flag (exit 2, no "
       "session); with --skip-preflight: run_end failed, PORT_IN_USE, the engine never started")
def test_port_taken(tmp_path, observed):
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        r = sgtui(*real_args(tmp_path / "a", port, preflight=True))
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("sgtui: preflight:")]
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert f"port {port}: 127.0.0.1:{port} is in use -> stop what listens there or pick another --vllm-port" \
            in lines[0]
        assert not list((tmp_path / "a" / "sessions").glob("*.jsonl"))
        r2 = sgtui(*real_args(tmp_path / "b", port))
    session = session_in(tmp_path / "b" / "sessions")
    assert r2.returncode == 1
    assert_readable(session)
    assert ends(session) == {"vllm-sleep1": "failed"}
    err = errors(session)[0]
    assert err.category == "PORT_IN_USE"
    assert not [e for e in Watch(session).poll() if e.kind == "proc"], "an engine was started on a taken port"
    assert_left_clean(session, [])
    observed(f"preflight: exit 2, {lines[0][:90]}; skipped: exit 1, {err.category}: {err.message[:60]}")


@fault("engine killed -9 mid-rollout (real vLLM)", "requests in flight recorded as errors, rollout not ok, "
       "SERVER_CRASH, run_end failed, nothing recorded before lost, nothing left")
def test_engine_killed_mid_rollout(tmp_path, observed):
    port = free_port()
    proc = start(*real_args(tmp_path, port, "--num-rollouts", "8", "--concurrency", "8", "--max-output-tokens",
                            "2000"), out=tmp_path / "cli")
    session = session_in(tmp_path / "sessions")
    w = Watch(session)
    pgid = w.engine_pgid()
    w.phase("rollout", "start", step=1, timeout=600)  # a cold vLLM start on a busy 2-core box takes minutes
    time.sleep(0.3)
    before = w.snapshot()
    kill_group(pgid, signal.SIGKILL)
    rc = reap(proc, 120)
    assert rc == 1
    res = assert_readable(session)
    assert_prefix_kept(session, before)
    reqs = [e for e in res.events if isinstance(e, Request) and e.step == 1]
    assert len(reqs) == 8 and sum(bool(r.error) for r in reqs) >= 4, [r.error for r in reqs]
    rollout_end = [e for e in res.events if isinstance(e, Phase) and e.name == "rollout" and e.edge == "end"]
    assert rollout_end and rollout_end[0].ok is False
    err = errors(session)[0]
    assert err.category == "SERVER_CRASH", (err.category, err.message)
    assert ends(session) == {"vllm-sleep1": "failed"}
    assert_left_clean(session, [port])
    observed(f"exit 1; {sum(bool(r.error) for r in reqs)}/8 requests recorded as errors; rollout ok=False; "
             f"{err.category}: {err.message[:60]}; run_end failed; nothing left")


def test_oom_at_wake_up_log_text_is_categorized():
    """Only a GPU produces this; the recorded log text must still be categorized."""
    from sgtui.errors import categorize

    tail = [
        "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1548]     self.model_runner.wake_up(tags)",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "79.19 GiB of which 1.10 GiB is free.",
    ]
    assert categorize(tail)[0] == "OOM"
    assert categorize(["ModuleNotFoundError: No module named 'vllm'"])[0] == "IMPORT_ERROR"
    assert categorize(["OSError: [Errno 98] Address already in use"])[0] == "PORT_IN_USE"
    assert categorize(["memory capacity is unbalanced. Some GPUs may be occupied"])[0] == "TP_IMBALANCE"
