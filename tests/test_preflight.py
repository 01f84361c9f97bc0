"""Preflight: each failure is one line with what to do; leftovers are found by marker only, cleaned by group."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtui import preflight
from sgtui.config import RunConfig

FIX = Path(__file__).parent / "fixtures"


def run_cfg(tmp_path, **kw):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    d = dict(label="vllm-sleep1", backend="vllm", strategy="sleep1", python=sys.executable, model=str(model),
             port=_free_port(), device="cpu")
    d.update(kw)
    return RunConfig(**d)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def by_name(checks):
    return {c.name: c for c in checks}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_all_good_on_cpu_has_no_gpu_check(tmp_path):
    checks = preflight.run_checks([run_cfg(tmp_path)], tmp_path / "sessions", check_imports=False)
    names = by_name(checks)
    assert all(c.ok for c in checks if c.name != "leftover servers"), checks
    assert not any(n.startswith("GPU") for n in names) and names["sessions dir"].ok and names["model"].ok


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = by_name(preflight.run_checks([run_cfg(tmp_path, port=port)], tmp_path, check_imports=False))[f"port {port}"]
    assert not c.ok and c.message == f"127.0.0.1:{port} is in use" and "--vllm-port" in c.fix


def test_venv_missing_and_engine_not_importable(tmp_path, monkeypatch):
    monkeypatch.setenv("SGTUI_CACHE", str(tmp_path / "cache"))
    ours = str(tmp_path / "cache" / "venvs" / "vllm-cpu" / "bin" / "python")
    c = by_name(preflight.run_checks([run_cfg(tmp_path, python=ours)], tmp_path))["vllm venv"]
    assert not c.ok and c.message == f"{ours} not found" and "`sgtui setup`" in c.fix
    # a user's own interpreter: re-running our setup would not make it; the fix says what would
    missing = run_cfg(tmp_path, python="/nope/bin/python")
    c = by_name(preflight.run_checks([missing], tmp_path))["vllm venv"]
    assert not c.ok and c.message == "/nope/bin/python not found" and "sgtui setup" not in c.fix
    # sgtui's own venv is a real python without vLLM: the import fails and the error line is shown
    c = by_name(preflight.run_checks([run_cfg(tmp_path)], tmp_path))["vllm venv"]
    assert not c.ok and "cannot import vllm" in c.message and "No module named 'vllm'" in c.message
    assert c.fix == f"install vllm into {sys.executable} (`{sys.executable} -m pip install vllm`) or pass another"


def test_engine_version_is_shown(tmp_path):
    """A stand-in engine package (named as such) on a wrapper python: the version the import reports is shown."""
    pkgs = tmp_path / "pkgs" / "vllm"
    pkgs.mkdir(parents=True)
    (pkgs / "__init__.py").write_text("__version__ = '0.0.0-standin'\n")
    py = tmp_path / "python"
    py.write_text(f"#!/bin/sh\nPYTHONPATH=\"$PYTHONPATH:{tmp_path / 'pkgs'}\" exec {sys.executable} \"$@\"\n")
    py.chmod(0o755)
    assert preflight.engine_version(str(py), "vllm") == (True, "0.0.0-standin")
    c = by_name(preflight.run_checks([run_cfg(tmp_path, python=str(py))], tmp_path))["vllm venv"]
    assert c.ok and c.message == "vllm 0.0.0-standin"


def test_engine_import_timeout(tmp_path):
    py = tmp_path / "python"
    py.write_text("#!/bin/sh\nsleep 30\n")
    py.chmod(0o755)
    t0 = time.monotonic()
    ok, msg = preflight.engine_version(str(py), "vllm", timeout=0.5)
    assert not ok and "took more than" in msg and time.monotonic() - t0 < 10


def test_sessions_dir_unwritable(tmp_path):
    (tmp_path / "afile").write_text("")
    target = tmp_path / "afile" / "sessions"  # under a file: unwritable even for root
    c = by_name(preflight.run_checks([run_cfg(tmp_path)], target, check_imports=False))["sessions dir"]
    assert not c.ok and str(target) in c.message and "not writable" in c.message and "--output" in c.fix


def test_model_dir_problems(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    c = by_name(preflight.run_checks([run_cfg(tmp_path, model=str(bare))], tmp_path, check_imports=False))["model"]
    assert not c.ok and c.message == f"{bare}: no config.json" and "--model" in c.fix
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    c = by_name(preflight.run_checks([run_cfg(tmp_path, model=str(broken))], tmp_path, check_imports=False))["model"]
    assert not c.ok and "not valid JSON" in c.message
    gone = tmp_path / "gone"
    c = by_name(preflight.run_checks([run_cfg(tmp_path, model=str(gone))], tmp_path, check_imports=False))["model"]
    assert not c.ok and "no such directory" in c.message
    # a hub id not resolved yet (the launch form's) is looked up in the Hugging Face cache, never downloaded
    # (tests/test_models.py: cached, offline and not cached, online and not cached)
    c = by_name(preflight.run_checks([run_cfg(tmp_path, model="Qwen/Qwen2.5-7B-Instruct")], tmp_path,
                                     check_imports=False))["model"]
    assert c.message.startswith("Qwen/Qwen2.5-7B-Instruct: ")


def test_gpu_run_without_driver(tmp_path):
    from sgtui import gpu

    if gpu.list_devices():
        pytest.skip("this machine has an NVIDIA driver")
    c = by_name(preflight.run_checks([run_cfg(tmp_path, device="cuda", gpus=[0])], tmp_path,
                                     check_imports=False))["GPUs"]
    assert not c.ok and c.message == "no NVIDIA driver"


def _make_leftover(*extra):
    out = subprocess.run([sys.executable, str(FIX / "leftover.py"), "owner", *extra], capture_output=True,
                         text=True, timeout=30)
    return [int(p) for p in out.stdout.split()]


def _kill_group(pid):
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_leftover_with_marker_is_found_and_cleaned_by_group(tmp_path):
    (marked,) = _make_leftover()
    try:
        found = [x for x in preflight.find_leftovers() if x.pid == marked]
        assert len(found) == 1 and found[0].pgid == marked and found[0].run == "test-leftover"
        c = by_name(preflight.run_checks([run_cfg(tmp_path)], tmp_path, check_imports=False))["leftover servers"]
        assert not c.ok and f"pid {marked}" in c.message and "sgtui cleanup" in c.fix
        actions = preflight.cleanup_leftovers(found, grace=5)
        assert actions == [f"stopped process group {marked}"]
        time.sleep(0.1)
        assert not alive(marked)
        assert not [x for x in preflight.find_leftovers() if x.pid == marked]
    finally:
        _kill_group(marked)


def test_process_without_marker_is_never_touched(tmp_path):
    """Neither found nor signalled: not alone (a forged Leftover for it), not as a member of a leftover's group."""
    marked, unmarked = _make_leftover("mixed")
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        found = preflight.find_leftovers()
        assert plain.pid not in {x.pid for x in found} and unmarked not in {x.pid for x in found}
        forged = preflight.Leftover(pid=plain.pid, pgid=plain.pid, run="x", owner_pid=1, cmdline="")
        assert preflight.cleanup_leftovers([forged], grace=1) == []
        mine = [x for x in found if x.pid == marked]
        actions = preflight.cleanup_leftovers(mine, grace=5)
        assert any("without the sgtui marker" in a for a in actions) and f"stopped pid {marked}" in actions
        time.sleep(0.1)
        assert not alive(marked) and alive(unmarked) and plain.poll() is None
    finally:
        plain.kill()
        plain.wait()
        _kill_group(marked)
        try:
            os.kill(unmarked, signal.SIGKILL)
        except ProcessLookupError:
            pass


_CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("SGTUI_")}
_SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def _sleeper(env=None, stdin=None, argv=_SLEEP):
    return subprocess.Popen(argv, env={**_CLEAN_ENV, **(env or {})}, stdin=stdin, start_new_session=True)


def _env_of(pid):
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_owner_pid_reused_by_a_newer_process_does_not_hide_a_leftover():
    """Real processes: a marked process whose owner's pid now belongs to a process that started after it (as a
    reused pid would) is a leftover; one whose owner started before it is not (its owner is alive)."""
    # marked first, and only then told its owner's pid: it re-executes itself with the marker, which keeps its
    # start time, so the "owner" below is a process newer than the marked one
    exec_marked = ("import os, sys; owner = sys.stdin.readline().strip(); "
                   "os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)'], "
                   "{**os.environ, 'SGTUI_OWNER_PID': owner, 'SGTUI_RUN': 'a'})")
    procs = []
    try:
        marked = _sleeper(stdin=subprocess.PIPE, argv=[sys.executable, "-c", exec_marked])
        procs.append(marked)
        time.sleep(0.1)  # start times have clock-tick resolution
        newer = _sleeper()
        procs.append(newer)
        marked.stdin.write(f"{newer.pid}\n".encode())
        marked.stdin.close()
        live_owner = _sleeper()
        procs.append(live_owner)
        time.sleep(0.1)
        owned = _sleeper({"SGTUI_OWNER_PID": str(live_owner.pid), "SGTUI_RUN": "b"})
        procs.append(owned)
        deadline = time.monotonic() + 10
        while b"SGTUI_RUN=a" not in _env_of(marked.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        found = [x for x in preflight.find_leftovers() if x.pid in (marked.pid, owned.pid)]
        assert [(x.pid, x.pgid, x.run, x.owner_pid) for x in found] == [(marked.pid, marked.pid, "a", newer.pid)]
        assert "time.sleep(120)" in found[0].cmdline
    finally:
        for p in procs:
            p.kill()
            p.wait()
