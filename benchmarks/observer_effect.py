"""Observer effect: what does watching cost? sgtui's full pipeline vs the bare load generator.

On the real vLLM CPU server (tiny model), the same rollouts are measured two ways, alternated several
times in one run so that drift of a shared machine hits both alike:

  (a) full: the Textual app (headless driver, 200x50) running live, its orchestrator thread, the GPU
      sampler (NVML, or its no-driver path), the session writer, and the runner subprocess with its
      /metrics scraper; numbers read back from the saved session.
  (b) bare: the same engine class and load generator in one process of the same interpreter the runner
      uses (the vLLM venv's), no events kept, no scraping, no UI, no session.
  (c) headless: (a) without the Textual app (`sgtui --no-ui`'s path: orchestrator, sampler, session
      writer, runner and scraper), which tells the UI's share of (a)'s cost from the pipeline's.

Each round starts its own server (start-up is not measured) and runs `--steps` rollouts of the same
prompts; the first rollout of each round is dropped (a warm-up batch runs before it in all). Prints
output throughput and mean TTFT per round and the paired ratios against bare: throughput bare/x and
TTFT x/bare for x = full and headless (target: sgtui costs at most 1%, i.e. ratios <= 1.01).

    .venv/bin/python benchmarks/observer_effect.py [--rounds 3 --steps 4 --prompts 32 --concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sgtui import stats  # noqa: E402
from sgtui.config import RunConfig  # noqa: E402
from sgtui.events import Request  # noqa: E402
from sgtui.runner import loadgen, procs, workload  # noqa: E402
from sgtui.runner.engines.vllm import VllmEngine  # noqa: E402
from sgtui.session import read_session  # noqa: E402
from sgtui.state import calculate_metrics, load_state, step_summary  # noqa: E402


def make_cfg(args: argparse.Namespace, work: Path, label: str) -> RunConfig:
    return RunConfig(label=label, backend="vllm", strategy="keep", sync="none", python=args.python, model=args.model,
                     device="cpu", port=procs.free_port(), num_steps=args.steps, num_rollouts=args.prompts,
                     concurrency=args.concurrency, max_input_tokens=128, max_output_tokens=args.max_output_tokens,
                     temperature=0.0, warmup_requests=args.concurrency, scrape_interval=1.0, sim_train_seconds=0.0,
                     workdir=str(work / label))


def full_round(args: argparse.Namespace, work: Path, i: int, ui: bool = True) -> list[tuple[float, float]]:
    """(output tok/s, mean TTFT ms) of each measured step, read back from the session sgtui saved."""
    name = f"{'full' if ui else 'headless'}{i}"
    cfg = make_cfg(args, work, name)
    session = work / f"{name}.jsonl"
    if ui:
        from sgtui.tui.app import make_app  # here, not at the top: (b) runs in the vLLM venv, without textual

        app = make_app("live", runs=[cfg], session_path=session, exports=(), use_last_session=False)
        app.quit_after_finish = True
        asyncio.run(app.run_async(headless=True, size=(200, 50)))
        app.shutdown()
    else:
        from sgtui.headless import run_headless

        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines and report: not this table's
            run_headless([cfg], session, [])
    run = load_state(read_session(session).events).runs[cfg.label]
    if run.status != "ok":
        raise SystemExit(f"full pipeline run ended {run.status}; see {session}")
    out = []
    for step in run.rl_steps[1:]:
        m = step_summary(run.steps[step]).metrics
        out.append((m.output_throughput, m.mean_ttft_ms))
    return out


async def bare_round(args: argparse.Namespace, work: Path, i: int) -> list[tuple[float, float]]:
    cfg = make_cfg(args, work, f"bare{i}")
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    prompts = workload.build_prompts(cfg, cfg.model)
    engine = VllmEngine(cfg, lambda e: None, Path(cfg.workdir))
    out = []
    try:
        await engine.start()
        async with loadgen.make_client(cfg.concurrency) as client:
            await loadgen.warmup(client, engine.base_url, "completions", cfg.served_model_name,
                                 prompts[: cfg.warmup_requests], concurrency=cfg.concurrency, max_tokens=16,
                                 seed=cfg.seed)
            for step in range(1, cfg.num_steps + 1):
                got: list[Request] = []
                t0 = time.perf_counter()
                await loadgen.run_batch(client, engine.base_url, "completions", cfg.served_model_name, prompts,
                                        concurrency=cfg.concurrency, max_tokens=cfg.max_output_tokens,
                                        temperature=0.0, seed=cfg.seed + 1000 * step, run="", step=step,
                                        emit=got.append)
                m = calculate_metrics(got, time.perf_counter() - t0)
                if m.errors:
                    raise SystemExit(f"bare round: {m.errors} requests failed")
                if step > 1:
                    out.append((m.output_throughput, m.mean_ttft_ms))
    finally:
        if engine.child is not None:
            procs.stop_group(engine.child.pgid, 10, engine.child.proc)
        await engine.aclose()
    return out


def bare_in_runner_python(args: argparse.Namespace, work: Path, i: int) -> list[tuple[float, float]]:
    argv = [args.python, __file__, "--bare-round", str(i), "--work", str(work), "--model", args.model,
            "--python", args.python, "--steps", str(args.steps),
            "--prompts", str(args.prompts), "--concurrency", str(args.concurrency),
            "--max-output-tokens", str(args.max_output_tokens)]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bare round failed (exit code {r.returncode}):\n{r.stderr[-3000:]}")
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bare-round", type=int, default=-1, help=argparse.SUPPRESS)  # internal: one (b) round
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="")
    ap.add_argument("--python", default="", help="the vLLM venv's interpreter")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-output-tokens", type=int, default=64)
    args = ap.parse_args()
    if not (args.model and args.python):
        from sgtui.cli import CPU_VENVS, TINY_MODEL  # the CPU defaults that `sgtui` itself uses

        args.model = args.model or str(TINY_MODEL)
        args.python = args.python or str(CPU_VENVS["vllm"] / "bin" / "python")
    if args.bare_round >= 0:
        print(json.dumps(asyncio.run(bare_round(args, Path(args.work), args.bare_round))))
        return
    if not (Path(args.python).exists() and (Path(args.model) / "config.json").exists()):
        raise SystemExit(f"{args.python} or {args.model} is missing: run `bash setup/setup.sh`")
    got: dict[str, list[list[tuple[float, float]]]] = {"full": [], "headless": [], "bare": []}
    measure = {"full": lambda w, i: full_round(args, w, i), "headless": lambda w, i: full_round(args, w, i, ui=False),
               "bare": lambda w, i: bare_in_runner_python(args, w, i)}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for i in range(args.rounds):
            order = list(got) if i % 2 == 0 else list(reversed(got))  # a trend over time hits all alike
            for name in order:
                steps = measure[name](work, i)
                got[name].append(steps)
                tput = stats.mean([g[0] for g in steps])
                ttft = stats.mean([g[1] for g in steps])
                print(f"round {i + 1} {name:8}: {tput:8.1f} tok/s  TTFT {ttft:7.1f} ms", file=sys.stderr)

    def paired(name: str, k: int) -> list[float]:
        """Per round: `name`'s cost against bare (throughput bare/name, TTFT name/bare)."""
        out = []
        for a, b in zip(got[name], got["bare"]):
            ma, mb = stats.mean([g[k] for g in a]), stats.mean([g[k] for g in b])
            out.append(mb / ma if k == 0 else ma / mb)
        return out

    print(f"{'':32}{'median':>8}  per round")
    for name in ("full", "headless"):
        for label, k in (("throughput bare / " + name, 0), (f"mean TTFT {name} / bare", 1)):
            xs = paired(name, k)
            print(f"{label:32}{stats.percentile(xs, 50):8.3f}  " + " ".join(f"{x:.3f}" for x in xs))
    print("target: all <= 1.01. On 2 cores the runner's scraper, the orchestrator and the UI take CPU from "
          "the server itself, and round-to-round spread on a shared machine is often larger than 1%.")


if __name__ == "__main__":
    main()
