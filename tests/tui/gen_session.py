"""Seeded session generator for the UI tests (deterministic: same seed, same events, same times).

A stand-in until the shared `tests/gen.py` covers what these tests need
(per-GPU process shares, engine gauges, log lines, a failing run). Times start
at a fixed Unix time so nothing depends on the wall clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from sgtui.events import (
    EngineGauges,
    Error,
    Event,
    GpuSample,
    Log,
    Phase,
    Proc,
    Request,
    RunEnd,
    RunStart,
    SessionHeader,
    Train,
)
from sgtui.session import SessionWriter

T0 = 1_700_000_000.0


@dataclass
class RunSpec:
    label: str
    backend: str
    strategy: str
    #: seconds per phase (mean); jittered by the seed
    phases: dict = field(default_factory=dict)
    tok_per_s: float = 900.0  # decode speed per request
    ttft: float = 0.08
    fail_step: int = 0  # >0: OOM during this step's rollout
    gpus: tuple = (0,)


DEFAULT_RUNS = (
    RunSpec("vllm-sleep1", "vllm", "sleep1", {"offload": 1.5, "train": 2.0, "reload": 0.15, "weight_sync": 0.05},
            tok_per_s=950.0, ttft=0.07),
    RunSpec("sglang-release", "sglang", "release", {"offload": 0.6, "train": 2.0, "reload": 0.5, "weight_sync": 0.01},
            tok_per_s=820.0, ttft=0.09),
)


def _phase(out: list[Event], run: str, step: int, name: str, start: float, dur: float, ok: bool = True,
           detail: str = "") -> float:
    out.append(Phase(t=start, run=run, step=step, name=name, edge="start", detail=""))
    out.append(Phase(t=start + dur, run=run, step=step, name=name, edge="end", ok=ok, detail=detail))
    return start + dur


def generate(seed: int = 0, runs: tuple[RunSpec, ...] = DEFAULT_RUNS, steps: int = 3, rollouts: int = 8,
             concurrency: int = 4, output_tokens: int = 24, gpu: bool = True, n_gpus: int = 1,
             concurrent: bool = False, gauges: bool = True, logs: bool = True, t0: float = T0,
             sample_s: float = 0.5) -> list[Event]:
    """Events of one session, sorted by time, header first."""
    rnd = random.Random(seed)
    ev: list[Event] = [SessionHeader(t=t0, id=f"gen{seed}", created="2023-11-14T22:13:20+00:00", host="testhost",
                                     argv=["sgtui", "--seed", str(seed)], config={"runs": []}, sgtui_version="0.1.0",
                                     pid=0)]
    spans: list[tuple[str, str, float, float, tuple]] = []  # (run, phase, start, end, gpus)
    t_run = t0 + 0.2
    total_mib = 81559.0
    for ri, spec in enumerate(runs):
        t = t0 + 0.2 if concurrent else t_run
        lbl = spec.label
        gpus = tuple(spec.gpus) if not concurrent else (ri % max(1, n_gpus),)
        ev.append(RunStart(t=t, run=lbl, backend=spec.backend, engine_version="0.0-test", model="/models/tiny",
                           tp=1, gpus=list(gpus), strategy=spec.strategy, python="3.11.0", torch="2.13.0",
                           mode="inference", device="cuda" if gpu else "cpu", config={"num_steps": steps},
                           pid=1000 + ri))
        ev.append(Proc(t=t + 0.01, run=lbl, role="engine", pid=2000 + ri, pgid=2000 + ri, action="start",
                       argv=["python", "-m", spec.backend]))
        start = t + 0.05
        dur = 6.0 + rnd.random() * 2
        t = _phase(ev, lbl, 0, "startup", start, dur, detail="cold start")
        spans.append((lbl, "startup", start, t, gpus))
        if logs:
            for k in range(3):
                ev.append(Log(t=start + dur * (k + 1) / 4, run=lbl, source="engine", line=f"{spec.backend} loading shard {k}"))
        start = t
        t = _phase(ev, lbl, 0, "warmup", start, 0.4 + rnd.random() * 0.2)
        spans.append((lbl, "warmup", start, t, gpus))
        failed = False
        for step in range(1, steps + 1):
            # rollout: requests in slots
            r_start = t
            ev.append(Phase(t=r_start, run=lbl, step=step, name="rollout", edge="start"))
            slot_t = [r_start] * concurrency
            for i in range(rollouts):
                s = min(range(concurrency), key=lambda k: slot_t[k])
                send = slot_t[s]
                ttft = spec.ttft * (0.7 + 0.6 * rnd.random())
                itl = [1.0 / spec.tok_per_s * (0.6 + 0.8 * rnd.random()) * concurrency for _ in range(output_tokens - 1)]
                latency = ttft + sum(itl)
                err = ""
                if spec.fail_step == step and i >= rollouts // 2:
                    err = "HTTP 500: CUDA out of memory"
                    latency = ttft
                    itl = []
                ev.append(Request(t=send + latency, run=lbl, step=step, start=send, ttft=ttft, latency=latency,
                                  itl=itl, prompt_tokens=64, output_tokens=0 if err else output_tokens, error=err,
                                  slot=s, model="policy", served_model="policy"))
                slot_t[s] = send + latency
            r_end = max(slot_t)
            if gauges:
                n = max(1, int((r_end - r_start) / 0.5))
                for k in range(n):
                    tk = r_start + (k + 0.5) * (r_end - r_start) / n
                    ev.append(EngineGauges(t=tk, run=lbl, step=step, gauges={
                        "kv_usage": round(0.2 + 0.6 * rnd.random(), 3), "running": float(concurrency),
                        "waiting": float(rnd.randint(0, 3)), "prefix_hit_rate": round(0.5 + 0.4 * rnd.random(), 3)}))
            if spec.fail_step == step:
                ev.append(Log(t=r_end - 0.01, run=lbl, source="engine",
                              line="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"))
                ev.append(Phase(t=r_end, run=lbl, step=step, name="rollout", edge="end", ok=False,
                                detail="EngineError: OOM"))
                ev.append(Error(t=r_end + 0.01, run=lbl, category="OOM", message="engine ran out of GPU memory",
                                log_tail=["torch.OutOfMemoryError: CUDA out of memory."], step=step,
                                advice="lower --gpu-memory-utilization"))
                ev.append(Proc(t=r_end + 0.3, run=lbl, role="engine", pid=2000 + ri, pgid=2000 + ri, action="exit",
                               returncode=-15))
                ev.append(RunEnd(t=r_end + 0.4, run=lbl, status="failed", detail="OOM: engine ran out of GPU memory"))
                spans.append((lbl, "rollout", r_start, r_end, gpus))
                t = r_end + 0.4
                failed = True
                break
            ev.append(Phase(t=r_end, run=lbl, step=step, name="rollout", edge="end",
                            detail=f"{rollouts}/{rollouts} ok"))
            spans.append((lbl, "rollout", r_start, r_end, gpus))
            t = r_end
            for name in ("offload", "train", "reload", "weight_sync"):
                mean = spec.phases.get(name, 0.5)
                start = t
                t = _phase(ev, lbl, step, name, start, mean * (0.85 + 0.3 * rnd.random()))
                spans.append((lbl, name, start, t, gpus))
                if name == "train":
                    ev.append(Train(t=t, run=lbl, step=step, loss=round(1.0 / step + rnd.random() * 0.05, 4),
                                    tokens=rollouts * output_tokens, seconds=t - start, simulated=True))
                if logs and name in ("offload", "reload"):
                    ev.append(Log(t=t, run=lbl, source="runner", line=f"step {step} {name} done"))
        if not failed:
            start = t
            t = _phase(ev, lbl, 0, "shutdown", start, 0.5 + rnd.random() * 0.2)
            spans.append((lbl, "shutdown", start, t, gpus))
            ev.append(Proc(t=t - 0.01, run=lbl, role="engine", pid=2000 + ri, pgid=2000 + ri, action="exit"))
            ev.append(RunEnd(t=t + 0.01, run=lbl, status="ok"))
        t_run = t + 0.5
    t_end = max(e.t for e in ev)
    if gpu:
        k = 0
        labels = [s.label for s in runs]
        while True:
            ts = t0 + 0.1 + k * sample_s
            if ts > t_end:
                break
            devices, procs = [], []
            for d in range(n_gpus):
                used = 480.0
                for (lbl, name, a, b, gpus) in spans:
                    if d not in gpus or ts < a:
                        continue
                    if name in ("startup",) and ts <= b:
                        used += 40000.0 * min(1.0, (ts - a) / max(b - a, 1e-6))
                    elif name in ("warmup", "rollout", "reload", "weight_sync") and ts <= b:
                        used += 41000.0
                    elif name == "offload" and ts <= b:
                        used += 41000.0 * (1 - (ts - a) / max(b - a, 1e-6)) + 800
                    elif name == "train" and ts <= b:
                        used += 800 + 22000.0
                    elif name == "shutdown" and ts <= b:
                        used += 20000.0
                    else:
                        continue
                    procs.append({"pid": 2000 + labels.index(lbl), "device": d, "used_mib": used - 480.0, "run": lbl})
                devices.append({"index": d, "name": "NVIDIA H100 80GB HBM3", "used_mib": round(used, 1),
                                "total_mib": total_mib, "util": 90 if used > 20000 else 3})
            ev.append(GpuSample(t=ts, devices=devices, processes=procs))
            k += 1
    else:
        ev.append(GpuSample(t=t0 + 0.1, error="no NVIDIA driver"))
    head, rest = ev[0], ev[1:]
    rest.sort(key=lambda e: e.t)
    return [head] + rest


def write_session(path: Path, events: list[Event]) -> Path:
    path = Path(path)
    with SessionWriter(path) as w:
        for e in events:
            w.write(e)
    return path


def six_runs() -> tuple[RunSpec, ...]:
    out = []
    for i, (backend, strat) in enumerate([("vllm", "sleep1"), ("vllm", "sleep2"), ("vllm", "restart"),
                                          ("sglang", "release"), ("sglang", "restart"), ("sglang", "keep")]):
        out.append(RunSpec(f"{backend}-{strat}", backend, strat,
                           {"offload": 0.5 + 0.3 * i, "train": 2.0, "reload": 0.2 + 0.2 * i, "weight_sync": 0.05},
                           tok_per_s=800 + 40 * i, ttft=0.06 + 0.01 * i))
    return tuple(out)
