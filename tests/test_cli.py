"""The `sgtui` command as a user runs it (subprocesses): one-line errors, headless runs with a stand-in
runner, stop/ls on a live session, cleanup listing, device assignment."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtui.cli import assign_devices
from sgtui.config import ConfigError, RunConfig
from sgtui.events import RunEnd, RunStart
from sgtui.session import read_session

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "tests" / "fixtures" / "standin_python.sh"


def sgtui(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "sgtui.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line_error(r, needle, code=2):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("sgtui: error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "╭" not in r.stderr


@pytest.fixture
def model(tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text('{"model_type": "llama"}')
    return m


def test_usage_errors_are_one_line(tmp_path, model):
    cases = [
        (["--num-steps", "abc"], "Invalid value for '--num-steps'"),
        (["--bogus"], "No such option: --bogus"),
        (["report"], "Missing argument"),
        (["report", "a.jsonl", "--format", "pdf"], "--format 'pdf'"),
        (["--run", f"vllm@{STANDIN}", "--model", str(model), "--placement", "nope"], "--placement 'nope'"),
        (["--run", f"vllm@{STANDIN}", "--model", str(model), "--mode", "x"], "--mode 'x'"),
        (["--run", f"vllm@{STANDIN}", "--model", str(model), "--num-steps", "0"], "--num-steps must be at least 1"),
        (["--run", f"vllm@{STANDIN}", "--model", str(tmp_path)], "no config.json"),
        (["--run", f"vllm@{STANDIN}", "--model", str(model), "--trainer", "deepspeed"], "--trainer 'deepspeed'"),
        (["--run", f"vllm@{STANDIN}", "--model", str(model), "--gpus", "a"], "--gpus/--train-gpus"),
        (["stop", str(tmp_path / "none.jsonl")], "no such session file"),
        (["ls", str(tmp_path / "nodir")], "no such sessions directory"),
        (["attach", str(tmp_path / "none.jsonl")], "no such session file"),
        (["attach", "-o", str(tmp_path)], f"no unfinished session in {tmp_path}"),
        (["attach", "-o", str(tmp_path / "nodir")], "--output"),
    ]
    for args, needle in cases:
        one_line_error(sgtui(*args), needle)


def test_host_other_than_loopback_warns(model, tmp_path):
    # --num-steps 0 fails after the warning (a bad --placement now fails while parsing, before it)
    r = sgtui("--run", f"vllm@{STANDIN}", "--model", str(model), "--host", "0.0.0.0", "--num-steps", "0")
    assert "warning: --host 0.0.0.0" in r.stderr and "dev-mode endpoints" in r.stderr


def headless(tmp_path, model, mode, *extra):
    env = {"SGTUI_TEST_PYTHON": sys.executable, "SGTUI_FAKE_MODE": mode}
    out = tmp_path / "sessions"
    args = ["--no-ui", "--run", f"vllm@{STANDIN}", "--run", f"sglang:release@{STANDIN}", "--model", str(model),
            "--skip-preflight", "-o", str(out), *extra]
    return out, env, args


def test_headless_ok_writes_session_report_and_exports(tmp_path, model):
    out, env, args = headless(tmp_path, model, "ok")
    r = sgtui(*args, "--export", "txt,json,md", env=env)
    assert r.returncode == 0, r.stderr
    assert "VERDICT" in r.stdout and "vllm-sleep1: ok" in r.stderr
    (session,) = out.glob("*.jsonl")
    assert {p.suffix for p in out.iterdir() if p.is_file()} == {".jsonl", ".txt", ".json", ".md"}
    ends = {e.run: e.status for e in read_session(session).events if isinstance(e, RunEnd)}
    assert ends == {"vllm-sleep1": "ok", "sglang-release": "ok"}


def test_headless_concurrent_runs_get_their_own_ports(tmp_path, model):
    env = {"SGTUI_TEST_PYTHON": sys.executable, "SGTUI_FAKE_MODE": "ok"}
    out = tmp_path / "sessions"
    r = sgtui("--no-ui", "--concurrent", "--run", f"vllm@{STANDIN}", "--run", f"vllm:restart@{STANDIN}", "--model",
              str(model), "--skip-preflight", "-o", str(out), "--export", "", env=env)
    assert r.returncode == 0, r.stderr
    (session,) = out.glob("*.jsonl")
    ports = [run["port"] for run in read_session(session).header.config["runs"]]
    assert ports == [8100, 8101]


def test_headless_failed_run_exits_1(tmp_path, model):
    out, env, args = headless(tmp_path, model, "crash")
    r = sgtui(*args, "--export", "", env=env)
    assert r.returncode == 1, r.stderr
    assert "runner ended without run_end (exit code 3)" in r.stderr
    (session,) = out.glob("*.jsonl")
    assert {e.status for e in read_session(session).events if isinstance(e, RunEnd)} == {"failed"}


def _wait_for(pred, timeout=90):  # generous: the suite runs on two workers beside real engines
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_stop_cancels_a_live_headless_session_and_ls_follows_it(tmp_path, model):
    out, env, args = headless(tmp_path, model, "grandchildren")
    proc = subprocess.Popen([sys.executable, "-m", "sgtui.cli", *args, "--export", ""], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        session = _wait_for(lambda: next(iter(out.glob("*.jsonl")), None))
        _wait_for(lambda: any(isinstance(e, RunStart) for e in read_session(session).events))
        r = sgtui("ls", str(out))
        assert r.returncode == 0 and f"running (pid {proc.pid})" in r.stdout
        r = sgtui("stop", str(session))
        assert r.returncode == 0 and f"pid {proc.pid}" in r.stderr
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    ends = {e.run: e.status for e in read_session(session).events if isinstance(e, RunEnd)}
    assert ends == {"vllm-sleep1": "cancelled"}  # the second run never started
    runner_log = next(out.rglob("runner.stderr.log")).read_text()
    pids = [int(p) for p in runner_log.split("PIDS")[1].split("\n")[0].split()]
    assert not any(Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]
                   for p in pids)
    r = sgtui("ls", str(out))
    assert r.returncode == 0 and "cancelled" in r.stdout and "running" not in r.stdout


def test_stop_never_signals_a_process_that_is_not_sgtui(tmp_path):
    """The header names a live pid that is not sgtui (a reused pid): `stop` refuses and the process lives."""
    from sgtui.events import encode
    from sgtui.session import make_header

    other = subprocess.Popen(["sleep", "60"])
    try:
        hdr = make_header(["sgtui"], {})
        hdr.pid = other.pid
        p = tmp_path / "s.jsonl"
        p.write_bytes(encode(hdr) + encode(RunStart(t=1.0, run="a", backend="vllm")))
        r = sgtui("stop", str(p))
        one_line_error(r, "no live sgtui process owns this session")
        assert other.poll() is None
        r = sgtui("ls", str(tmp_path))
        assert f"dead (sgtui pid {other.pid} gone, runs never ended)  [a:dead]" in r.stdout
    finally:
        other.kill()
        other.wait()


def test_report_to_unwritable_path_is_one_line(tmp_path):
    from sgtui.events import encode
    from tests.gen import generate

    p = tmp_path / "s.jsonl"
    p.write_bytes(b"".join(encode(e) for e in generate(steps=1)))
    (tmp_path / "afile").write_text("")
    one_line_error(sgtui("report", str(p), "-o", str(tmp_path / "afile" / "r.txt")), "cannot write")


def test_cleanup_lists_leftovers_and_needs_yes_without_a_terminal():
    from sgtui import preflight

    out = subprocess.run([sys.executable, str(REPO / "tests" / "fixtures" / "leftover.py"), "owner"],
                         capture_output=True, text=True, timeout=30)
    (pid,) = [int(p) for p in out.stdout.split()]
    try:
        r = subprocess.run([sys.executable, "-m", "sgtui.cli", "cleanup"], capture_output=True, text=True,
                           cwd=REPO, stdin=subprocess.DEVNULL, timeout=60)
        assert r.returncode == 1 and f"pid {pid}  pgid {pid}  run test-leftover" in r.stdout
        assert "sgtui cleanup --yes" in r.stderr
        assert Path(f"/proc/{pid}").exists()  # listed, not touched
    finally:
        preflight.cleanup_leftovers([x for x in preflight.find_leftovers() if x.pid == pid], grace=2)


def cfgs(n, backend="vllm", port=8100):
    return [RunConfig(label=f"r{i}", backend=backend, strategy="sleep1", port=port, device="cuda") for i in range(n)]


def test_assign_devices_sequential_concurrent_and_split():
    runs = cfgs(2)
    assign_devices(runs, [], [], placement="shared", concurrent=False, tp=1, gpus_given=False, on_gpu=True,
                   device_count=4)
    assert [(r.gpus, r.train_gpus, r.port) for r in runs] == [([0], [0], 8100), ([0], [0], 8100)]
    runs = cfgs(2)
    assign_devices(runs, [], [], placement="split", concurrent=True, tp=1, gpus_given=False, on_gpu=True,
                   device_count=4)
    assert [(r.gpus, r.train_gpus, r.port) for r in runs] == [([0], [1], 8100), ([2], [3], 8101)]
    runs = cfgs(2)
    assign_devices(runs, [2, 3], [], placement="shared", concurrent=True, tp=1, gpus_given=True, on_gpu=True,
                   device_count=4)
    assert [r.gpus for r in runs] == [[2], [3]]
    runs = cfgs(1)
    assign_devices(runs, [0], [], placement="split", concurrent=False, tp=1, gpus_given=True, on_gpu=True,
                   device_count=2)
    assert (runs[0].gpus, runs[0].train_gpus) == ([0], [1])
    for kw, needle in [
        (dict(placement="split", concurrent=True, tp=2, device_count=4, n=2), "need 8 GPUs"),
        (dict(placement="split", concurrent=False, tp=1, device_count=1, n=1), "needs trainer GPUs"),
        (dict(placement="shared", concurrent=False, tp=4, device_count=2, n=1), "--tp 4: needs 4"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            assign_devices(cfgs(kw.pop("n")), [], [], gpus_given=False, on_gpu=True, **kw)
    with pytest.raises(ConfigError, match="share GPU 0"):
        assign_devices(cfgs(1), [0], [0], placement="split", concurrent=False, tp=1, gpus_given=True, on_gpu=True,
                       device_count=2)
    with pytest.raises(ConfigError, match="no device 7"):
        assign_devices(cfgs(1), [7], [], placement="shared", concurrent=False, tp=1, gpus_given=True, on_gpu=True,
                       device_count=2)
    with pytest.raises(ConfigError, match="no NVIDIA GPU"):
        assign_devices(cfgs(1), [0], [], placement="shared", concurrent=False, tp=1, gpus_given=True, on_gpu=False)
    runs = cfgs(3)
    assign_devices(runs, [], [], placement="shared", concurrent=True, tp=1, gpus_given=False, on_gpu=False)
    assert [r.port for r in runs] == [8100, 8101, 8102] and all(r.gpus == [] for r in runs)
