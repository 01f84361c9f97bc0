"""The orchestrator with real child processes: groups, cancel, crashes, garbage output."""

import os
import sys
import threading
import time
from pathlib import Path

from sgtui.config import RunConfig
from sgtui.events import Error, Log, RunEnd
from sgtui.orchestrator import REPO_ROOT, Orchestrator
from sgtui.session import read_session

FAKE = Path(__file__).parent / "fixtures" / "fake_runner.py"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def make(tmp_path, modes, **kw):
    runs = [RunConfig(label=f"r{i}-{m}", backend="vllm", strategy="sleep1", workdir=str(tmp_path / f"w{i}"))
            for i, m in enumerate(modes)]
    mode_of = {r.label: m for r, m in zip(runs, modes)}
    os.environ["SGTUI_REPO"] = str(REPO_ROOT)
    return Orchestrator(runs, tmp_path / "s.jsonl", sample_gpus=False, grace=kw.pop("grace", 3.0),
                        runner_argv=lambda c: [sys.executable, str(FAKE), mode_of[c.label], c.label], **kw)


def ends(path):
    return {e.run: e.status for e in read_session(path).events if isinstance(e, RunEnd)}


def test_ok_and_garbage_lines_kept_as_logs(tmp_path):
    orch = make(tmp_path, ["ok", "garbage"])
    assert orch.run_sync() == {"r0-ok": "ok", "r1-garbage": "ok"}
    res = read_session(tmp_path / "s.jsonl")
    assert res.problems == [] and res.header is not None
    logs = [e.line for e in res.events if isinstance(e, Log) and e.run == "r1-garbage"]
    assert "this is not json" in logs and any("request.t" in line for line in logs)


def test_runner_crash_without_run_end_is_failed_with_stderr_tail(tmp_path):
    orch = make(tmp_path, ["crash", "ok"])
    assert orch.run_sync() == {"r0-crash": "failed", "r1-ok": "ok"}
    res = read_session(tmp_path / "s.jsonl")
    err = next(e for e in res.events if isinstance(e, Error))
    assert "exit code 3" in err.message and "Traceback: boom" in err.log_tail
    assert ends(tmp_path / "s.jsonl") == {"r0-crash": "failed", "r1-ok": "ok"}


def _cancel_soon(orch, delay=1.5):
    threading.Thread(target=lambda: (time.sleep(delay), orch.cancel()), daemon=True).start()


def test_cancel_stops_every_group_including_announced_grandchildren(tmp_path):
    orch = make(tmp_path, ["grandchildren", "ok"])
    _cancel_soon(orch)
    statuses = orch.run_sync()
    assert statuses["r0-grandchildren"] == "cancelled"
    assert statuses["r1-ok"] == "pending"  # never started after the cancel
    stderr = (tmp_path / "w0" / "runner.stderr.log").read_text()
    pids = [int(p) for p in stderr.split("PIDS")[1].split()[:2]]
    time.sleep(0.2)
    assert not any(alive(p) for p in pids), "a process of the run survived the cancel"
    assert ends(tmp_path / "s.jsonl") == {"r0-grandchildren": "cancelled"}


def test_runner_ignoring_sigterm_is_killed_and_marked_cancelled(tmp_path):
    orch = make(tmp_path, ["ignore_term"], grace=1.0)
    _cancel_soon(orch, 1.0)
    t0 = time.monotonic()
    assert orch.run_sync() == {"r0-ignore_term": "cancelled"}
    assert time.monotonic() - t0 < 15
    assert ends(tmp_path / "s.jsonl") == {"r0-ignore_term": "cancelled"}


def test_runner_killed_dash_9_is_failed(tmp_path):
    orch = make(tmp_path, ["hang"])

    def kill_runner():
        for _ in range(100):
            h = orch.handles[0]
            if h.proc is not None and h.started:
                os.kill(h.proc.pid, 9)
                return
            time.sleep(0.05)

    threading.Thread(target=kill_runner, daemon=True).start()
    assert orch.run_sync() == {"r0-hang": "failed"}
    err = next(e for e in read_session(tmp_path / "s.jsonl").events if isinstance(e, Error))
    assert "killed by signal 9" in err.message


def test_unwritable_session_dir_is_a_clear_error(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    orch = make(tmp_path, ["ok"])
    orch.session_path = d / "s.jsonl"
    if os.geteuid() == 0:  # root ignores directory permissions: use a path under a file instead
        (tmp_path / "afile").write_text("")
        orch.session_path = tmp_path / "afile" / "s.jsonl"
    try:
        orch.run_sync()
    except OSError as e:
        assert e.filename and "s.jsonl" in str(e.filename) or "afile" in str(e)
    else:
        raise AssertionError("expected an OSError for an unwritable sessions dir")
