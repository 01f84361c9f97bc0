"""What does the live dashboard cost in CPU while a rollout streams? UI-process CPU seconds per rollout second.

    .venv/bin/python benchmarks/ui_cpu.py                      # this tree, 200x50 and 80x24, both profiles
    .venv/bin/python benchmarks/ui_cpu.py --baseline 8bd5cc6   # and that revision's UI, alternated, side by side
    .venv/bin/python benchmarks/ui_cpu.py --profile cpu --size 200x50 --seconds 20 --rounds 3

Why: on a 2-core box the live UI took its CPU from the engine server it was watching
(benchmarks/observer_effect.py: 15-30% of the server's throughput). Wall time on a shared box is noise; CPU
seconds are not (much): each measurement is the process's CPU time (`time.process_time`, every thread)
minus the feeder thread's own (read from /proc), over the rollout, divided by the rollout's seconds.

The app is the one the CLI runs (`make_app("live", ...)`), in a terminal of the given size whose driver
does everything a terminal driver does (the compositor's updates are encoded to escape sequences) except
write them anywhere (`NullTerminal`; `--headless` uses Textual's headless driver, which skips that
encoding). An orchestrator stand-in (`Feeder`, in the orchestrator's thread, through the same
subscriber) first replays a few finished RL steps (backdated: the timeline, table and GPU panel are as
full as after a while), then streams one rollout of `--seconds` at the profile's rates:

  cpu   the observer-effect box: one vLLM run, 8 streams of 64 tokens, ~25 requests/s (63 ITL values
        each), engine gauges every second, no GPU driver (one 'no NVIDIA driver' sample), a log line
        per 10 requests;
  busy  a GPU box: two runs, 64 streams each, 1000 request events/s (32 ITL values each), GPU samples
        of two devices at 5 Hz, gauges every second per run, 50 log lines/s.

`--baseline REV` puts REV's `sgtui/tui/` (git archive) on a copy of this tree's `sgtui/` in a temporary
directory and runs the same measurement on it in a child process (every round is a process of its
own); rounds alternate between the trees so drift hits both alike.
Prints, per profile and size: UI CPU s per rollout second (median of rounds, and each round), and the
split by thread (event loop, hub, summaries worker) of the last round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

from trees import ROOT, export_tree, run_child

CLK = os.sysconf("SC_CLK_TCK")

PROFILES = {
    "cpu": dict(runs=1, req_rate=25.0, itl_n=63, log_every=10, gpus=0, gauge_s=1.0),
    "busy": dict(runs=2, req_rate=1000.0, itl_n=32, log_every=20, gpus=2, gauge_s=1.0),
}
HISTORY_STEPS = 3


def thread_cpu(native_id: int) -> float:
    """utime+stime of one thread of this process, seconds (0 when it is gone)."""
    try:
        with open(f"/proc/self/task/{native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def threads_cpu() -> dict[str, float]:
    """CPU seconds per live thread name of this process."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.native_id is not None:
            out[t.name] = out.get(t.name, 0.0) + thread_cpu(t.native_id)
    return out


def measure(profile: str, size: tuple[int, int], seconds: float, headless: bool, hz: float = 0.0) -> dict:
    """One round in this process: the app on `size`, one rollout of `seconds` at `profile`'s rates."""
    from textual.drivers.headless_driver import HeadlessDriver

    from sgtui.config import RunConfig
    from sgtui.events import EngineGauges, GpuSample, Log, Phase, Request, RunEnd, RunStart
    from sgtui.tui.app import make_app

    p = PROFILES[profile]
    labels = ["vllm-sleep1", "sglang-release"][: p["runs"]]
    result: dict = {}

    class NullTerminal(HeadlessDriver):
        """A terminal driver that encodes every update as a real one does and throws the bytes away."""

        written = 0

        @property
        def is_headless(self) -> bool:
            return False

        def write(self, data: str) -> None:
            NullTerminal.written += len(data)

        def flush(self) -> None:
            pass

    class Feeder:
        """Orchestrator stand-in (its thread is the orchestrator's): a history, then one live rollout."""

        def __init__(self, runs, session_path, *, subscribers, **_):
            self.subs = subscribers
            self.fatal = ""
            self.rnd = random.Random(0)

        def cancel(self) -> None:
            pass

        def emit(self, e) -> None:
            for s in self.subs:
                s(e)

        def request(self, run: str, step: int, t: float) -> Request:
            rnd, n = self.rnd, p["itl_n"]
            itl = [0.004 + 0.004 * rnd.random() for _ in range(n)]
            ttft = 0.05 + 0.1 * rnd.random()
            return Request(t=t, run=run, step=step, start=t - ttft - sum(itl), ttft=ttft, latency=ttft + sum(itl),
                           itl=itl, prompt_tokens=128, output_tokens=n + 1, slot=self.rnd.randrange(64))

        def gpu(self, t: float) -> GpuSample:
            if not p["gpus"]:
                return GpuSample(t=t, error="no NVIDIA driver")
            return GpuSample(t=t, devices=[{"index": i, "name": "NVIDIA H100 80GB HBM3",
                                            "used_mib": 60000 + 1000 * self.rnd.random(), "total_mib": 81559.0,
                                            "util": 95} for i in range(p["gpus"])],
                             processes=[{"pid": 100 + i, "device": i, "used_mib": 59000.0,
                                         "run": labels[i % len(labels)]}
                                        for i in range(p["gpus"])])

        def history(self, t: float) -> float:
            """Startup, warm-up and HISTORY_STEPS finished steps, backdated to end at t."""
            step_s = 12.0
            t -= 30.0 + HISTORY_STEPS * step_s
            for i, r in enumerate(labels):
                self.emit(RunStart(t=t, run=r, backend=r.split("-")[0], strategy=r.split("-")[1], gpus=[i],
                                   device="cuda" if p["gpus"] else "cpu", engine_version="bench",
                                   config={"num_steps": HISTORY_STEPS + 1}))
            if p["gpus"]:
                for k in range(int(30 * 5)):
                    self.emit(self.gpu(t + k * 0.2))
            else:
                self.emit(self.gpu(t))
            for r in labels:
                for name, dur in (("startup", 25.0), ("warmup", 4.0)):
                    self.emit(Phase(t=t, run=r, step=0, name=name, edge="start"))
                    self.emit(Phase(t=t + dur, run=r, step=0, name=name, edge="end"))
                    t2 = t + dur
                    for k in range(5):
                        self.emit(Log(t=t2, run=r, source="engine", line=f"INFO startup line {k}"))
            t += 30.0
            for step in range(1, HISTORY_STEPS + 1):
                for r in labels:
                    t1 = t
                    self.emit(Phase(t=t1, run=r, step=step, name="rollout", edge="start"))
                    n = int(8.0 * p["req_rate"] / len(labels))
                    for k in range(n):
                        self.emit(self.request(r, step, t1 + 8.0 * k / n))
                    self.emit(EngineGauges(t=t1 + 4, run=r, step=step, gauges={"kv_usage": 0.4, "running": 8.0,
                                                                               "waiting": 0.0, "prefix_hit_rate": 0.5}))
                    t1 += 8.0
                    self.emit(Phase(t=t1, run=r, step=step, name="rollout", edge="end"))
                    for name, dur in (("offload", 0.5), ("train", 2.0), ("reload", 0.8), ("weight_sync", 0.4)):
                        self.emit(Phase(t=t1, run=r, step=step, name=name, edge="start"))
                        t1 += dur
                        self.emit(Phase(t=t1, run=r, step=step, name=name, edge="end"))
                if p["gpus"]:
                    for k in range(int(step_s * 5)):
                        self.emit(self.gpu(t + k * 0.2))
                t += step_s
            return t

        def run_sync(self) -> dict[str, str]:
            me = threading.get_native_id()
            self.history(time.time())
            step = HISTORY_STEPS + 1
            t = time.time()
            for r in labels:
                self.emit(Phase(t=t, run=r, step=step, name="rollout", edge="start"))
            time.sleep(1.0)  # the history's snapshots and summaries settle; not measured
            cpu0, me0, thr0 = time.process_time(), thread_cpu(me), threads_cpu()
            w0 = time.perf_counter()
            end = w0 + seconds
            next_gpu = next_gauge = w0
            sent = logs = 0
            k = 0
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                wall = time.time()
                due = int((now - w0) * p["req_rate"])
                while sent < due:
                    r = labels[sent % len(labels)]
                    self.emit(self.request(r, step, wall))
                    sent += 1
                    if sent % p["log_every"] == 0:
                        logs += 1
                        self.emit(Log(t=wall, run=r, source="engine",
                                      line=f"(APIServer pid=1) INFO:     127.0.0.1:{40000 + logs % 999} - "
                                           f"\"POST /v1/completions HTTP/1.1\" 200 OK"))
                if now >= next_gpu and (p["gpus"] or k == 0):
                    next_gpu += 0.2
                    if p["gpus"]:
                        self.emit(self.gpu(wall))
                if now >= next_gauge:
                    next_gauge += p["gauge_s"]
                    for r in labels:
                        self.emit(EngineGauges(t=wall, run=r, step=step, gauges={
                            "kv_usage": 0.3 + 0.1 * self.rnd.random(), "running": float(self.rnd.randrange(8, 64)),
                            "waiting": 0.0, "prefix_hit_rate": 0.5}))
                k += 1
                time.sleep(0.002)
            wall_s = time.perf_counter() - w0
            cpu1, me1, thr1 = time.process_time(), thread_cpu(me), threads_cpu()
            feeder = me1 - me0
            result.update(
                seconds=wall_s, ui_cpu=(cpu1 - cpu0 - feeder) / wall_s, feeder_cpu=feeder / wall_s,
                requests=sent, snapshots=app.hub.snapshots if app.hub else 0,
                threads={n: (thr1.get(n, 0.0) - thr0.get(n, 0.0)) / wall_s for n in thr1
                         if n != threading.current_thread().name},
            )
            t = time.time()
            for r in labels:
                self.emit(Phase(t=t, run=r, step=step, name="rollout", edge="end"))
                self.emit(RunEnd(t=t, run=r, status="ok"))
            return {r: "ok" for r in labels}

    runs = [RunConfig(label=r, backend=r.split("-")[0], strategy=r.split("-")[1], num_steps=HISTORY_STEPS + 1)
            for r in labels]
    with tempfile.TemporaryDirectory(prefix="sgtui-uicpu-") as d:
        app = make_app("live", runs=runs, session_path=Path(d) / "bench.jsonl", exports=(), use_last_session=False,
                       orchestrator_factory=lambda runs, path, **kw: Feeder(runs, path, **kw), auto_verdict=False,
                       **({"refresh_hz": hz} if hz > 0 else {}))
        app.quit_after_finish = True
        if not headless:
            app.driver_class = NullTerminal
        asyncio.run(app.run_async(headless=headless, size=size))
        app.shutdown()
    result["bytes_per_s"] = NullTerminal.written / max(1e-9, result.get("seconds", 1.0))
    import sgtui.tui

    result["tui"] = sgtui.tui.__file__
    return result


def run_round(tree: Path, profile: str, size: str, seconds: float, headless: bool, hz: float) -> dict:
    argv = [__file__, "--child", "--tree", str(tree), "--profile", profile, "--size", size,
            "--seconds", str(seconds), "--hz", str(hz)] + (["--headless"] if headless else [])
    return run_child(argv, tree, f"the round on {tree}", "tui")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu,busy", help="comma-separated: " + ", ".join(PROFILES))
    ap.add_argument("--size", default="200x50,80x24", help="comma-separated WxH")
    ap.add_argument("--seconds", type=float, default=15.0, help="rollout seconds measured per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline", default="", help="a git revision whose sgtui/tui/ is measured alongside")
    ap.add_argument("--headless", action="store_true", help="Textual's headless driver (skips the ANSI encoding)")
    ap.add_argument("--hz", type=float, default=0.0, help="the app's snapshot rate cap (default: the app's own)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, args.tree)
        w, h = (int(x) for x in args.size.split("x"))
        print(json.dumps(measure(args.profile, (w, h), args.seconds, args.headless, args.hz)))
        return
    trees = {"this tree": ROOT}
    if args.baseline:
        trees = {args.baseline: export_tree(args.baseline, "sgtui/tui"), "this tree": ROOT}
    print(f"UI-process CPU seconds per rollout second (process CPU minus the feeder thread), {args.seconds:.0f} s "
          f"rollouts, {'headless driver' if args.headless else 'null terminal'}", flush=True)
    for profile in args.profile.split(","):
        for size in args.size.split(","):
            got: dict[str, list[dict]] = {name: [] for name in trees}
            for i in range(args.rounds):
                names = list(trees) if i % 2 == 0 else list(reversed(trees))
                for name in names:
                    got[name].append(run_round(trees[name], profile, size, args.seconds, args.headless, args.hz))
            meds = {name: median([r["ui_cpu"] for r in rs]) for name, rs in got.items()}
            for name, rs in got.items():
                med = meds[name]
                last = rs[-1]
                split = ", ".join(f"{n} {v:.3f}" for n, v in sorted(last["threads"].items(), key=lambda kv: -kv[1])
                                  if v >= 0.002)
                print(f"{profile:>5} {size:>7} {name:>12}: {med:6.3f} s/s  rounds "
                      + " ".join(f"{x:.3f}" for x in (r["ui_cpu"] for r in rs))
                      + f"  | {last['snapshots']} snapshots, {last['requests']} requests, "
                        f"{last['bytes_per_s'] / 1024:.0f} KiB/s to the terminal | {split}", flush=True)
            if args.baseline:
                b, a = meds[args.baseline], meds["this tree"]
                print(f"{profile:>5} {size:>7} {'':>12}  this tree / {args.baseline}: "
                      f"{a / b if b else float('nan'):.2f}", flush=True)


if __name__ == "__main__":
    main()
