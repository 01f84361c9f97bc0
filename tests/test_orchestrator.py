"""The orchestrator with real child processes: groups, cancel, crashes, garbage output."""

import os
import subprocess
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


def _pids_from_stderr(path):
    text = Path(path).read_text()
    return [int(p) for p in text.split("PIDS")[1].split("\n")[0].split()]


def test_engine_group_dying_first_is_a_server_crash(tmp_path):
    orch = make(tmp_path, ["engine_dies"])
    assert orch.run_sync() == {"r0-engine_dies": "failed"}
    err = next(e for e in read_session(tmp_path / "s.jsonl").events if isinstance(e, Error))
    assert err.category == "SERVER_CRASH" and "exit code 1" in err.message
    assert "engine server died: CUDA error" in err.log_tail
    assert orch.handles[0].stderr_tail and orch.handles[0].returncode == 1


def test_crash_leaving_a_grandchild_on_stdout_does_not_hang(tmp_path):
    """The runner dies without run_end while a same-group child still holds its stdout pipe open."""
    orch = make(tmp_path, ["holder"])
    t0 = time.monotonic()
    assert orch.run_sync() == {"r0-holder": "failed"}
    assert time.monotonic() - t0 < 15
    (pid,) = _pids_from_stderr(tmp_path / "w0" / "runner.stderr.log")
    assert not alive(pid)
    err = next(e for e in read_session(tmp_path / "s.jsonl").events if isinstance(e, Error))
    assert err.category == "OTHER" and "exit code 3" in err.message


def test_runner_that_never_exits_after_run_end_is_stopped(tmp_path):
    orch = make(tmp_path, ["no_exit"], grace=1.0)
    t0 = time.monotonic()
    assert orch.run_sync() == {"r0-no_exit": "ok"}
    assert time.monotonic() - t0 < 15
    h = orch.handles[0]
    assert h.returncode == -9 and not alive(h.proc.pid)
    logs = [e.line for e in read_session(tmp_path / "s.jsonl").events if isinstance(e, Log)]
    assert any("did not exit" in line for line in logs)


def test_foreign_header_and_other_runs_events_are_not_recorded_as_such(tmp_path):
    orch = make(tmp_path, ["foreign"])
    assert orch.run_sync() == {"r0-foreign": "ok"}
    res = read_session(tmp_path / "s.jsonl")
    assert res.problems == [] and res.header.id != "forged"
    assert ends(tmp_path / "s.jsonl") == {"r0-foreign": "ok"}
    assert [e.id for e in res.events if e.kind == "session"] == [res.header.id]  # ours only
    assert any("ignored session event" in e.line for e in res.events if isinstance(e, Log))


def test_a_failing_subscriber_does_not_stop_the_runs(tmp_path):
    seen = []

    def broken(e):
        raise OSError(5, "Input/output error")  # the terminal went away

    orch = make(tmp_path, ["ok"], subscribers=[broken, seen.append])
    assert orch.run_sync() == {"r0-ok": "ok"}
    assert any(isinstance(e, RunEnd) for e in seen) and orch.subscriber_errors


def test_session_write_failure_mid_run_stops_runs_cleanly(tmp_path, monkeypatch):
    """Disk full after a few events: a clear `fatal`, every run stopped (no process left), nothing raised."""
    import errno

    from sgtui import orchestrator as orch_mod
    from sgtui.session import SessionWriter

    class FillingDisk(SessionWriter):  # stand-in for a disk that fills up: the 5th line fails with ENOSPC
        def write_raw(self, line):  # (after the runner announced its engine group and printed PIDS)
            if self.count >= 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            super().write_raw(line)

    monkeypatch.setattr(orch_mod, "SessionWriter", FillingDisk)
    orch = make(tmp_path, ["grandchildren", "ok"])
    t0 = time.monotonic()
    statuses = orch.run_sync()
    assert time.monotonic() - t0 < 15
    assert statuses == {"r0-grandchildren": "cancelled", "r1-ok": "pending"}
    assert "No space left on device" in orch.fatal and str(tmp_path / "s.jsonl") in orch.fatal
    pids = _pids_from_stderr(tmp_path / "w0" / "runner.stderr.log")
    time.sleep(0.2)
    assert not any(alive(p) for p in pids)
    assert len(read_session(tmp_path / "s.jsonl").events) == 4  # written before the disk filled


def test_concurrent_runs_go_at_once(tmp_path):
    orch = make(tmp_path, ["hang", "hang"], concurrent=True)
    both = threading.Event()

    def cancel_when_both_started():
        for _ in range(200):
            if all(h.started for h in orch.handles):
                both.set()
                orch.cancel()
                return
            time.sleep(0.05)

    threading.Thread(target=cancel_when_both_started, daemon=True).start()
    assert orch.run_sync() == {"r0-hang": "cancelled", "r1-hang": "cancelled"}
    assert both.is_set()


def test_second_cancel_skips_the_grace(tmp_path):
    orch = make(tmp_path, ["ignore_term"], grace=30.0)

    def cancel_twice():
        while not (orch.handles[0].started):
            time.sleep(0.05)
        orch.cancel()
        time.sleep(0.5)
        orch.cancel()

    threading.Thread(target=cancel_twice, daemon=True).start()
    t0 = time.monotonic()
    assert orch.run_sync() == {"r0-ignore_term": "cancelled"}
    assert time.monotonic() - t0 < 10  # not the 30 s grace


def test_runner_env_has_the_sgtui_package_alone_on_pythonpath_and_the_marker(tmp_path, monkeypatch):
    """The runner's PYTHONPATH starts with a directory holding only `sgtui` (this package), never the
    directory above the package (site-packages after a pip install: tests/test_pkgpath.py)."""
    from sgtui.runner.procs import MARKER_OWNER, MARKER_RUN

    monkeypatch.setenv("SGTUI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", "/opt/engine-site")
    orch = make(tmp_path, ["ok"])
    cfg = orch.handles[0].cfg
    cfg.env = {"MY_VAR": "1"}
    env = orch._env_for(cfg)
    first, *rest = env["PYTHONPATH"].split(os.pathsep)
    assert os.listdir(first) == ["sgtui"] and Path(first, "sgtui").resolve() == REPO_ROOT / "sgtui"
    assert str(REPO_ROOT) not in env["PYTHONPATH"].split(os.pathsep) and rest == ["/opt/engine-site"]
    assert env["MY_VAR"] == "1" and env[MARKER_RUN] == cfg.label and env[MARKER_OWNER] == str(os.getpid())


def test_split_placement_runner_sees_the_trainer_gpus(tmp_path):
    """The runner hosts the (simulated) trainer, so it is pinned to the trainer devices; the engine server it
    spawns is pinned to the engine's (tests/runner/test_vllm_engine.py)."""
    orch = make(tmp_path, ["ok"])
    cfg = orch.handles[0].cfg
    cfg.device, cfg.gpus, cfg.train_gpus, cfg.placement = "cuda", [0, 1], [2, 3], "split"
    env = orch._env_for(cfg)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cfg.train_gpus, cfg.placement = [], "shared"
    assert orch._env_for(cfg)["CUDA_VISIBLE_DEVICES"] == "0,1"
    cfg.device = "cpu"
    assert orch._env_for(cfg).get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # untouched


def test_concurrency_problems():
    from sgtui.orchestrator import concurrency_problems

    a = RunConfig(label="a", backend="vllm", strategy="sleep1", port=8100, device="cuda", gpus=[0], train_gpus=[1])
    b = RunConfig(label="b", backend="sglang", strategy="release", port=8100, device="cuda", gpus=[1], train_gpus=[1])
    problems = concurrency_problems([a, b])
    assert any("port 8100" in p for p in problems) and any("GPU 1" in p for p in problems)
    b.port, b.gpus, b.train_gpus = 8200, [2], [3]
    assert concurrency_problems([a, b]) == []


def test_group_cpu_seconds_counts_a_busy_group_not_a_sleeping_one():
    """The runner's measure of an engine's CPU during training: every process of the group, live ones only.
    Waits for CPU seconds rather than for wall time (a loaded CI box gives the spinners less than a core)."""
    from sgtui.runner import procs

    busy = subprocess.Popen([sys.executable, "-c", "import os, time\nos.fork()\nt = time.time()\n"
                             "while time.time() - t < 60: pass"], start_new_session=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
                            start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert idle.stdout.readline() == b"ready\n"  # its interpreter's start-up is over: only sleep is left
        b0, i0 = procs.group_cpu_seconds(busy.pid), procs.group_cpu_seconds(idle.pid)
        deadline = time.monotonic() + 30
        while procs.group_cpu_seconds(busy.pid) - b0 < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        b1, i1 = procs.group_cpu_seconds(busy.pid), procs.group_cpu_seconds(idle.pid)
        assert b1 - b0 >= 0.5  # two spinning processes (parent and forked child)
        assert i1 - i0 < 0.05
        assert procs.group_cpu_seconds(2 ** 22 + 7) == 0.0  # no such group: nothing counted
    finally:
        for p in (busy, idle):
            os.killpg(p.pid, 9)
            p.wait()
        idle.stdout.close()
