"""Faults on the real vLLM CPU server, driven through the runner as the orchestrator would."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtui.config import RunConfig
from sgtui.events import Error, Phase, Proc, Request, RunEnd, decode
from tests.engines import TINY, VLLM_PY, free_port, needs_vllm, port_is_free

pytestmark = [pytest.mark.engine, needs_vllm]
REPO = Path(__file__).resolve().parent.parent


def run_runner(tmp_path, on_event=None, timeout=300, **kw):
    base = dict(label="v", backend="vllm", strategy="sleep1", sync="none", python=str(VLLM_PY), model=str(TINY),
                port=free_port(), num_steps=1, num_rollouts=4, concurrency=4, max_input_tokens=32,
                max_output_tokens=16, sim_train_seconds=0.1, workdir=str(tmp_path / "w"))
    cfg = RunConfig(**{**base, **kw})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([str(VLLM_PY), "-m", "sgtui.runner", "--config", cfg.to_json()], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    events = []
    deadline = time.monotonic() + timeout
    for line in p.stdout:
        ev = decode(line)
        events.append(ev)
        if on_event:
            on_event(ev, events)
        assert time.monotonic() < deadline
    p.wait(timeout=60)
    return cfg, events


def only(events, cls):
    return [e for e in events if isinstance(e, cls)]


def assert_clean(events, port):
    for proc in only(events, Proc):
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pgid, 0)
    assert port_is_free(port)


def test_bad_model_path_is_model_path_error(tmp_path):
    cfg, events = run_runner(tmp_path, model=str(tmp_path / "no-such-model"))
    err = only(events, Error)[0]
    assert err.category == "MODEL_PATH" and err.log_tail
    assert only(events, RunEnd)[0].status == "failed"
    assert_clean(events, cfg.port)


def test_port_taken_is_port_in_use(tmp_path):
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        cfg, events = run_runner(tmp_path, port=port)
    assert only(events, Error)[0].category == "PORT_IN_USE"
    assert only(events, RunEnd)[0].status == "failed"


def test_startup_timeout(tmp_path):
    cfg, events = run_runner(tmp_path, startup_timeout=2.0)
    err = only(events, Error)[0]
    assert err.category == "STARTUP_TIMEOUT" and "not healthy within 2 s" in err.message
    assert_clean(events, cfg.port)


def test_server_killed_mid_rollout(tmp_path):
    state = {"engine": None, "killed": False}

    def on_event(ev, events):
        if isinstance(ev, Proc) and ev.role == "engine" and ev.action == "start":
            state["engine"] = ev.pgid
        if isinstance(ev, Phase) and ev.name == "rollout" and ev.edge == "start" and not state["killed"]:
            time.sleep(0.1)
            os.killpg(state["engine"], signal.SIGKILL)
            state["killed"] = True

    cfg, events = run_runner(tmp_path, on_event=on_event, max_output_tokens=2000, num_rollouts=8)
    reqs = only(events, Request)
    assert len(reqs) == 8 and sum(bool(r.error) for r in reqs) >= 4  # failed requests are recorded as errors
    err = only(events, Error)[0]
    assert err.category == "SERVER_CRASH"
    rollout_end = [e for e in only(events, Phase) if e.name == "rollout" and e.edge == "end"][0]
    assert rollout_end.ok is False
    assert only(events, RunEnd)[0].status == "failed"
    assert_clean(events, cfg.port)


def test_oom_at_wake_up_log_text_is_categorized():
    """Only a GPU produces this; the recorded log text must still be categorized."""
    from sgtui.runner.errors import categorize

    tail = [
        "(EngineCore pid=1871) ERROR 11-23 22:04:57 [core.py:1548]     self.model_runner.wake_up(tags)",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "79.19 GiB of which 1.10 GiB is free.",
    ]
    assert categorize(tail)[0] == "OOM"
    assert categorize(["ModuleNotFoundError: No module named 'vllm'"])[0] == "IMPORT_ERROR"
    assert categorize(["OSError: [Errno 98] Address already in use"])[0] == "PORT_IN_USE"
    assert categorize(["memory capacity is unbalanced. Some GPUs may be occupied"])[0] == "TP_IMBALANCE"
