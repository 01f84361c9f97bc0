"""A scripted stand-in for `python -m sgtui.runner` (no engine): prints the runner's event protocol.

Used by the UI tests to drive the real orchestrator end to end on a machine
without an engine: same argv (`--config JSON`), same stdout protocol, same
process-group behaviour. It starts one child process group ("engine": a
`sleep`) announced with a `proc` event, so a cancel can be checked to leave
no process behind. Behaviour is chosen through the run config's `env`:

- FAKE_FAIL=OOM: the engine "runs out of memory" in step 2 (error event, run_end failed)
- FAKE_STEP_S: seconds per phase (default 0.05); FAKE_HANG=1: the rollout of step 1 never ends (for cancel)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sgtui.config import RunConfig  # noqa: E402
from sgtui.events import EngineGauges, Error, Log, Phase, Proc, Request, RunEnd, RunStart, encode  # noqa: E402


class Cancelled(Exception):
    pass


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    cfg = RunConfig.from_json(p.parse_args().config)
    out = sys.stdout.buffer
    run = cfg.label
    env = cfg.env
    phase_s = float(env.get("FAKE_STEP_S", "0.05"))
    stop = {"now": False}

    def on_term(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def emit(e) -> None:
        out.write(encode(e))
        out.flush()

    def sleep(s: float) -> None:
        end = time.time() + s
        while time.time() < end:
            if stop["now"]:
                raise Cancelled
            time.sleep(min(0.01, max(0.0, end - time.time())))

    open_phase: list[tuple[int, str]] = []

    def phase(step: int, name: str, dur: float, detail: str = "") -> None:
        emit(Phase(t=time.time(), run=run, step=step, name=name, edge="start"))
        open_phase.append((step, name))
        sleep(dur)
        open_phase.pop()
        emit(Phase(t=time.time(), run=run, step=step, name=name, edge="end", detail=detail))

    emit(RunStart(t=time.time(), run=run, backend=cfg.backend, engine_version="fake-0", model=cfg.model, tp=cfg.tp,
                  gpus=list(cfg.gpus), strategy=cfg.strategy, python="3", torch="", mode=cfg.mode, device=cfg.device,
                  config=cfg.to_dict(), pid=os.getpid()))
    engine = subprocess.Popen(["sleep", "300"], start_new_session=True)
    emit(Proc(t=time.time(), run=run, role="engine", pid=engine.pid, pgid=engine.pid, action="start",
              argv=["sleep", "300"]))
    status, detail = "ok", ""
    try:
        phase(0, "startup", phase_s * 2, "fake engine")
        emit(Log(t=time.time(), run=run, source="engine", line="fake engine ready"))
        phase(0, "warmup", phase_s)
        for step in range(1, cfg.num_steps + 1):
            t0 = time.time()
            emit(Phase(t=t0, run=run, step=step, name="rollout", edge="start"))
            open_phase.append((step, "rollout"))
            if env.get("FAKE_HANG") == "1":
                emit(Log(t=time.time(), run=run, source="engine", line="rollout waiting forever"))
                sleep(3600)
            for i in range(cfg.num_rollouts):
                sleep(phase_s / max(1, cfg.num_rollouts))
                now = time.time()
                emit(Request(t=now, run=run, step=step, start=now - 0.02, ttft=0.005 + 0.001 * i, latency=0.02,
                             itl=[0.001] * 7, prompt_tokens=16, output_tokens=8, slot=i % cfg.concurrency))
            emit(EngineGauges(t=time.time(), run=run, step=step,
                              gauges={"kv_usage": 0.25, "running": 2.0, "waiting": 0.0, "prefix_hit_rate": 0.5}))
            if env.get("FAKE_FAIL") == "OOM" and step == 2:
                emit(Log(t=time.time(), run=run, source="engine",
                         line="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"))
                open_phase.pop()
                emit(Phase(t=time.time(), run=run, step=step, name="rollout", edge="end", ok=False,
                           detail="EngineError: OOM"))
                emit(Error(t=time.time(), run=run, category="OOM", message="engine ran out of GPU memory", step=step,
                           log_tail=["torch.OutOfMemoryError: CUDA out of memory."],
                           advice="lower --gpu-memory-utilization"))
                status, detail = "failed", "OOM: engine ran out of GPU memory"
                break
            open_phase.pop()
            emit(Phase(t=time.time(), run=run, step=step, name="rollout", edge="end",
                       detail=f"{cfg.num_rollouts}/{cfg.num_rollouts} ok"))
            phase(step, "offload", phase_s)
            phase(step, "train", phase_s * 2, "simulated")
            phase(step, "reload", phase_s)
            phase(step, "weight_sync", phase_s / 2)
        if status == "ok":
            phase(0, "shutdown", phase_s)
    except Cancelled:
        for step, name in open_phase:
            emit(Phase(t=time.time(), run=run, step=step, name=name, edge="end", ok=False, detail="cancelled"))
        status, detail = "cancelled", "interrupted"
    finally:
        try:
            os.killpg(engine.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        rc = engine.wait()
        emit(Proc(t=time.time(), run=run, role="engine", pid=engine.pid, pgid=engine.pid, action="exit", returncode=rc))
    emit(RunEnd(t=time.time(), run=run, status=status, detail=detail))
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
