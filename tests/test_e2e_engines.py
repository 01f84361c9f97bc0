"""`sgtui --no-ui --mode training` end to end on the real vLLM and SGLang CPU servers (one session, two runs
side by side), each with its persistent megatron-core trainer (one torchrun per run, gloo).

vLLM restart (three server starts, restart sync) against SGLang release with LoRA sync; vLLM's sleep
strategies with LoRA sync run on the real server in tests/runner/test_vllm_real.py."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sgtui.events import Phase, Proc, Request, RunEnd, Train
from sgtui.session import read_session
from tests.engines import free_port, needs_sglang, needs_vllm, port_is_free
from tests.faults.harness import session_processes
from tests.trainer.conftest import needs_trainer

pytestmark = [pytest.mark.engine, needs_vllm, needs_sglang, needs_trainer]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("sessions")
    vport, sport = free_port(), free_port()
    cmd = [sys.executable, "-m", "sgtui.cli", "--no-ui", "--run", "vllm:restart",
           "--run", "sglang:release", "--num-steps", "2", "--num-rollouts", "6", "--concurrency", "4",
           "--max-output-tokens", "24", "--max-input-tokens", "48", "--mode", "training",
           "--vllm-port", str(vport), "--sglang-port", str(sport), "-o", str(out), "--export", "txt,json",
           "--concurrent"]  # side by side (each on its own port): the suite stays well under 15 min on 2 cores
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    sessions = list(out.glob("*.jsonl"))
    return r, sessions[0] if sessions else None, (vport, sport)


def test_exit_code_and_files(session):
    r, path, _ = session
    assert r.returncode == 0, r.stderr[-3000:]
    assert path is not None
    assert path.with_suffix(".txt").exists() and path.with_suffix(".json").exists()


def test_every_phase_of_every_step_and_one_request_per_rollout(session):
    _, path, _ = session
    res = read_session(path)
    assert res.problems == []
    for run in ("vllm-restart", "sglang-release"):
        phases = {(e.step, e.name, e.edge) for e in res.events if isinstance(e, Phase) and e.run == run}
        for step in (1, 2):
            for name in ("rollout", "offload", "train", "reload", "weight_sync"):
                assert (step, name, "start") in phases and (step, name, "end") in phases, (run, step, name)
        assert (0, "startup", "end") in phases and (0, "shutdown", "end") in phases
        reqs = [e for e in res.events if isinstance(e, Request) and e.run == run]
        assert len(reqs) == 12 and all(not e.error for e in reqs)
        assert all(e.output_tokens == 24 for e in reqs)  # ignore_eos + max_tokens, counted from usage
    ends = {e.run: e.status for e in res.events if isinstance(e, RunEnd)}
    assert ends == {"vllm-restart": "ok", "sglang-release": "ok"}


def test_one_persistent_trainer_per_run_trains_every_step_and_scores_the_rollouts(session):
    _, path, _ = session
    res = read_session(path)
    for run in ("vllm-restart", "sglang-release"):
        ev = [e for e in res.events if getattr(e, "run", "") == run]
        launches = [e for e in ev if isinstance(e, Phase) and e.name == "trainer_start" and e.edge == "end"]
        assert len(launches) == 1 and launches[0].ok and launches[0].detail.startswith("torchrun TP=1 ready")
        trains = [e for e in ev if isinstance(e, Train)]
        assert [t.step for t in trains] == [1, 2] and not any(t.simulated for t in trains)
        assert all(t.parts["update"] > 0 and "launch" not in t.parts for t in trains)
        # the engine's sampled tokens scored by the trainer: engine and trainer serve the same adapter (fp32)
        assert all(t.mismatch["tokens"] == 6 * 24 and t.mismatch["mean_abs"] < 1e-3 for t in trains), run
        torchruns = [e for e in ev if isinstance(e, Proc) and e.role == "trainer" and e.action == "start"
                     and e.argv and "torch.distributed.run" in e.argv]
        assert len(torchruns) == 1


def test_lora_adapter_answers(session):
    _, path, _ = session
    res = read_session(path)
    sg = [e for e in res.events if isinstance(e, Request) and e.run == "sglang-release"]
    assert {e.served_model for e in sg if e.step == 1} == {"policy:policy-s0"}
    assert {e.served_model for e in sg if e.step == 2} == {"policy:policy-s1"}
    syncs = [e.detail for e in res.events if isinstance(e, Phase) and e.run == "sglang-release"
             and e.name == "weight_sync" and e.edge == "end"]
    assert syncs[-1] == "unload policy-s1, load policy-s2"


def test_restart_starts_each_server_with_the_step_adapter(session):
    """Restart sync: the server starts with the initial adapter (step 1 rolls out on it, as in every run)
    and each restart loads the step's new one; its cost lands in `reload`, not in `weight_sync`."""
    _, path, _ = session
    events = [e for e in read_session(path).events if getattr(e, "run", "") == "vllm-restart"]
    assert {e.served_model for e in events if isinstance(e, Request)} == {"policy-lora"}
    argvs = [e.argv for e in events if isinstance(e, Proc) and e.action == "start" and e.role == "engine"]
    assert [a[a.index("--lora-modules") + 1].split("/")[-1] for a in argvs] == ["initial", "step-1", "step-2"]
    detail = {(e.step, e.name): e.detail for e in events if isinstance(e, Phase) and e.edge == "end"}
    assert detail[(0, "startup")].startswith("cold start with the initial adapter; vllm ")
    assert detail[(1, "offload")] == "server stopped (process group)"
    assert detail[(1, "reload")] == "warm restart (same machine, caches warm) with new adapter"
    assert detail[(2, "weight_sync")] == "included in reload (server restarted with the new adapter)"


def test_report_compares_backends_in_80_columns(session):
    r, path, _ = session
    text = path.with_suffix(".txt").read_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "vllm-restart" in text and "sglang-release" in text and "VERDICT" in text
    assert "not measured: not measurable on CPU" in text
    doc = orjson.loads(path.with_suffix(".json").read_bytes())
    assert {run["label"] for run in doc["runs"]} == {"vllm-restart", "sglang-release"}
    rep = subprocess.run([sys.executable, "-m", "sgtui.cli", "report", str(path), "--format", "trace"],
                         capture_output=True, cwd=REPO, timeout=120)
    assert rep.returncode == 0 and orjson.loads(rep.stdout)["traceEvents"]


def test_nothing_left_running_and_ports_free(session):
    _, path, (vport, sport) = session
    res = read_session(path)
    pgids = {e.pgid for e in res.events if isinstance(e, Proc)}
    assert len(pgids) >= 4  # restart strategy started the vLLM server 3 times
    for pg in pgids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pg, 0)
    assert port_is_free(vport) and port_is_free(sport)
    assert session_processes(path) == []  # by this session's owner markers: other modules run beside this one
