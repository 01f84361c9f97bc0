"""Seeded generator of realistic event streams for tests and benchmarks (no engine involved)."""

from __future__ import annotations

import random

from sgtui import events as E


def generate(labels=("vllm-sleep1", "sglang-release"), steps: int = 3, requests: int = 8, seed: int = 0,
             gpu: bool = True, itl_len: int = 32, speed: dict | None = None, noise: float = 0.0,
             t0: float = 1_000_000.0) -> list[E.Event]:
    """Runs one after another: startup, per step rollout/offload/train/reload/weight_sync, GPU samples."""
    rnd = random.Random(seed)
    speed = speed or {}
    t = t0
    out: list[E.Event] = [E.SessionHeader(t=t, id="gen")]

    def sample(used: float) -> None:
        if gpu:
            out.append(E.GpuSample(t=t, devices=[{"index": 0, "name": "H100", "used_mib": used, "total_mib": 81559.0,
                                                   "util": 50}]))

    for label in labels:
        backend, strategy = label.split("-", 1)
        factor = speed.get(label, 1.0)
        sample(480.0)
        t += 0.2
        out.append(E.RunStart(t=t, run=label, backend=backend, strategy=strategy, gpus=[0] if gpu else [],
                              device="cuda" if gpu else "cpu", engine_version="0.0"))

        def phase(name: str, step: int, dur: float) -> None:
            nonlocal t
            out.append(E.Phase(t=t, run=label, step=step, name=name, edge="start"))
            t += dur * (1 + noise * rnd.uniform(-1, 1))
            out.append(E.Phase(t=t, run=label, step=step, name=name, edge="end", detail=f"{name} done"))

        phase("startup", 0, 30.0)
        sample(40000.0)
        for s in range(1, steps + 1):
            out.append(E.Phase(t=t, run=label, step=s, name="rollout", edge="start"))
            start = t
            end = start
            for i in range(requests):
                if rnd.random() < 0.05:
                    out.append(E.Request(t=start + 0.5, run=label, step=s, start=start, latency=0.5,
                                         error="HTTP 500: boom", slot=i))
                    continue
                ttft = rnd.uniform(0.05, 0.3) * factor
                itl = [rnd.uniform(0.005, 0.02) * factor for _ in range(itl_len)]
                lat = ttft + sum(itl)
                out.append(E.Request(t=start + lat, run=label, step=s, start=start, ttft=ttft, latency=lat, itl=itl,
                                     prompt_tokens=100, output_tokens=itl_len + 1 + rnd.randint(0, 3), slot=i))
                out.append(E.EngineGauges(t=start + lat / 2, run=label, step=s,
                                          gauges={"kv_usage": rnd.random(), "running": float(i)}))
                end = max(end, start + lat)
            t = end + 0.001
            out.append(E.Phase(t=t, run=label, step=s, name="rollout", edge="end"))
            sample(40000.0)
            phase("offload", s, 1.5 * factor)
            sample(1300.0)
            phase("train", s, 5.0)
            sample(9000.0)
            phase("reload", s, 0.2 * factor)
            phase("weight_sync", s, 0.05)
            out.append(E.Train(t=t, run=label, step=s, loss=1.0 / s, tokens=1000, seconds=5.0))
        phase("shutdown", 0, 1.0)
        out.append(E.RunEnd(t=t, run=label, status="ok"))
    return out


def big_session(events: int) -> list:
    """About `events` events shaped like a long real session (benchmarks/ingest.py, replay_load.py): two runs,
    64 requests a step with 64 ITL values each."""
    per_step = 64
    steps = max(1, events // (2 * (2 * per_step + 14)))
    return generate(labels=("vllm-sleep1", "sglang-release"), steps=steps, requests=per_step, itl_len=64, seed=1)
