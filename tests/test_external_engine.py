"""`--vllm-url`: sgtui measures a REAL vLLM CPU server that this test started itself (tiny model, one server for
the module, its own process group), as a user's own server: sgtui must neither start nor stop it.

The server runs exactly as sgtui would start it (VllmEngine.server_argv/server_env: dev mode, LoRA with runtime
loading) but under another served model name, so that a run that kept asking for sgtui's own name ("policy")
would fail every request.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sgtui import external
from sgtui.config import ConfigError, RunConfig
from sgtui.events import Phase, Proc, Request, RunEnd, RunStart
from sgtui.runner.engines.vllm import ADAPTER_NAME, VllmEngine
from sgtui.session import read_session
from tests.engines import TINY, VLLM_PY, free_port, needs_vllm

REPO = Path(__file__).resolve().parent.parent
SERVED = "tiny-ext"
STEPS, ROLLOUTS = 2, 4


def sgtui(*args: str, out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sgtui.cli", "--no-ui", "-o", str(out), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("ext-server")
    cfg = RunConfig(label="ext", backend="vllm", strategy="sleep1", sync="lora", python=str(VLLM_PY),
                    model=str(TINY), port=free_port(), served_model_name=SERVED, max_input_tokens=64,
                    max_output_tokens=32)
    eng = VllmEngine(cfg, lambda e: None, work)
    proc = subprocess.Popen(eng.server_argv(), env={**os.environ, **eng.server_env()}, cwd=work,
                            stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{cfg.port}"
    t0 = time.monotonic()
    try:
        while True:
            assert proc.poll() is None, (work / "server.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() - t0 < 300, "the vLLM CPU server did not come up in 300 s"
            time.sleep(0.5)
        print(f"\nexternal vLLM CPU server up in {time.monotonic() - t0:.0f} s")
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


@pytest.fixture(scope="module")
def session(server, tmp_path_factory):
    url, _ = server
    out = tmp_path_factory.mktemp("sessions")
    r = sgtui("--vllm-url", url, "--run", "vllm:keep", "--num-steps", str(STEPS), "--num-rollouts", str(ROLLOUTS),
              "--concurrency", "4", "--max-input-tokens", "32", "--max-output-tokens", "16",
              "--sim-train-seconds", "0.1", "--export", "txt,md", out=out)
    paths = list(out.glob("*.jsonl"))
    return r, paths[0] if paths else None


@needs_vllm
@pytest.mark.engine
def test_keep_run_on_the_external_server_completes_and_says_external(server, session):
    url, _ = server
    r, path = session
    assert r.returncode == 0, r.stderr[-3000:]
    res = read_session(path)
    start = next(e for e in res.events if isinstance(e, RunStart))
    assert start.config["external_url"] == url and start.engine_argv == []
    assert start.engine_version == httpx.get(url + "/version").json()["version"]
    # sgtui started no engine: no engine process in the session at all
    assert not [e for e in res.events if isinstance(e, Proc) and e.role == "engine"]
    phases = {(e.step, e.name): e for e in res.events if isinstance(e, Phase) and e.edge == "end"}
    for step in range(1, STEPS + 1):
        for name in ("rollout", "offload", "train", "reload", "weight_sync"):
            assert phases[(step, name)].ok, (step, name)
    startup = phases[(0, "startup")].detail
    assert startup.startswith(f"external server at {url} (not started by sgtui): vllm ")
    assert f"served as {SERVED}" in startup and "LoRA loading available" in startup
    assert "left running" in phases[(0, "shutdown")].detail
    reqs = [e for e in res.events if isinstance(e, Request)]
    assert len(reqs) == STEPS * ROLLOUTS and not [e for e in reqs if e.error]
    # every step served the step's adapter, loaded into the external server at runtime
    assert {e.served_model for e in reqs} == {ADAPTER_NAME}
    assert phases[(STEPS, "weight_sync")].detail == f"unload + load_lora_adapter {ADAPTER_NAME}"
    assert [e.status for e in res.events if isinstance(e, RunEnd)] == ["ok"]


@needs_vllm
@pytest.mark.engine
def test_reports_say_what_was_not_controlled(server, session):
    url, _ = server
    _, path = session
    txt = " ".join(path.with_suffix(".txt").read_text().split())  # unwrapped
    assert f"external engine at {url}, not controlled by sgtui" in txt
    assert "per-process GPU memory cannot name them" in txt
    md = path.with_suffix(".md").read_text()
    assert f"<br>`vllm-keep`: external engine at {url}, not controlled by sgtui" in md


@needs_vllm
@pytest.mark.engine
def test_the_server_outlives_the_session_as_it_was_found(server, session):
    url, proc = server
    assert session[0].returncode == 0
    assert proc.poll() is None
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    models = [m["id"] for m in httpx.get(url + "/v1/models", timeout=5).json()["data"]]
    assert models == [SERVED]  # the run's adapter unloaded again
    r = httpx.post(url + "/v1/completions", json={"model": SERVED, "prompt": "hello", "max_tokens": 4}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] is not None


@needs_vllm
@pytest.mark.engine
def test_restart_with_a_url_is_refused_in_one_line_before_anything_starts(server, tmp_path):
    url, proc = server
    t0 = time.monotonic()
    r = sgtui("--vllm-url", url, "--run", "vllm:restart", out=tmp_path / "s")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert url in lines[0] and "cannot restart a server it did not start" in lines[0]
    assert not list((tmp_path / "s").glob("*.jsonl")) if (tmp_path / "s").exists() else True
    assert proc.poll() is None and time.monotonic() - t0 < 60


@needs_vllm
@pytest.mark.engine
def test_an_unreachable_url_is_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    r = sgtui("--vllm-url", url, "--run", "vllm:keep", out=tmp_path / "s")
    assert r.returncode == 2
    problems = [ln for ln in r.stderr.splitlines() if ln.startswith("sgtui: preflight:")]
    assert len(problems) == 1, r.stderr
    assert f"vllm server at {url} does not answer" in problems[0]
    assert not list((tmp_path / "s").glob("*.jsonl"))


@needs_vllm
@pytest.mark.engine
def test_without_preflight_the_runner_refuses_the_same_way(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    r = sgtui("--vllm-url", url, "--run", "vllm:keep", "--skip-preflight", "--export", "", out=tmp_path)
    assert r.returncode != 0
    res = read_session(next(tmp_path.glob("*.jsonl")))
    errors = [e for e in res.events if type(e).__name__ == "Error"]
    assert len(errors) == 1 and errors[0].category == "CONFIG"
    assert f"vllm server at {url} does not answer" in errors[0].message
    assert [e.status for e in res.events if isinstance(e, RunEnd)] == ["failed"]
    assert not [e for e in res.events if isinstance(e, Proc) and e.role == "engine"]


# -- what a server allows (pure: the capability answers of sgtui.external) ----------------------------------
def _srv(**kw) -> external.Server:
    return external.Server(backend=kw.pop("backend", "vllm"), url="http://h:1", models=["m"], **kw)


def test_strategies_and_syncs_a_server_cannot_do_are_refused_naming_the_url():
    no_dev = _srv(offload=False, offload_why="no /sleep: the server is not in dev mode (VLLM_SERVER_DEV_MODE=1)",
                  lora=True)
    why = external.refusal("vllm-sleep1", "vllm", "sleep1", "lora", no_dev)
    assert why.startswith("run vllm-sleep1: vllm:sleep1 with --vllm-url http://h:1: no /sleep") and "keep" in why
    assert external.refusal("vllm-keep", "vllm", "keep", "lora", no_dev) == ""
    no_lora = _srv(offload=True, lora=False, lora_why="the server was started without --enable-lora")
    assert "without --enable-lora" in external.refusal("x", "vllm", "keep", "lora", no_lora)
    assert external.refusal("x", "vllm", "keep", "none", no_lora) == ""  # +none: the base model, never synced
    sg = _srv(backend="sglang", offload=False, offload_why="needs --enable-memory-saver", lora=True)
    assert "--sglang-url http://h:1: needs --enable-memory-saver" in external.refusal("s", "sglang", "release",
                                                                                         "lora", sg)


@pytest.mark.parametrize("run,why", [("restart", "cannot restart"), ("keep+restart", "+restart syncs by"),
                                     ("keep+disk", "+disk full-weight sync is not supported")])
def test_config_refuses_what_no_external_server_allows(run, why):
    strategy, _, sync = run.partition("+")
    cfg = RunConfig(label="r", backend="vllm", strategy=strategy, sync=sync or "restart",
                    external_url="http://127.0.0.1:9")
    if sync == "disk":
        cfg.mode, cfg.trainer = "training", "megatron"
    with pytest.raises(ConfigError, match=re.escape(why)) as e:
        cfg.validate()
    assert "--vllm-url http://127.0.0.1:9" in str(e.value)


def test_urls_are_normalized_or_refused():
    assert external.normalize_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    for bad in ("127.0.0.1:8000", "ftp://h:1", "http://h:1/generate", "http://h:x"):
        with pytest.raises(ValueError):
            external.normalize_url(bad)
    assert external.report_line({"external_url": ""}) == "" and external.report_line({}) == ""
