"""Observer effect: what does watching cost? sgtui's full pipeline vs the bare load generator.

On ONE real vLLM server (started once here for every variant and round; start-up is not measured), the same
rollouts are measured three ways, alternated several times in one run so that drift of a shared machine
hits all alike:

  (a) full: the Textual app (headless driver, 200x50) running live, its orchestrator thread, the GPU
      sampler (NVML, or its no-driver path), the session writer, and the runner subprocess with its
      /metrics scraper, attached to the server as an external one (RunConfig.external_url, what
      `--vllm-url` gives); numbers read back from the saved session. Skipped, with a note, where Textual
      cannot be imported.
  (b) bare: sgtui's load generator alone against the same server, in one process of the same interpreter
      the runner uses (the vLLM one), no events kept, no scraping, no UI, no session.
  (c) headless: (a) without the Textual app (`sgtui --no-ui`'s path: orchestrator, sampler, session
      writer, runner and scraper), which tells the UI's share of (a)'s cost from the pipeline's.

Each variant's round runs a warm-up batch and `--steps` rollouts of the same prompts; the first rollout of
each round is dropped. Prints output throughput and mean TTFT per round and the paired ratios against bare:
throughput bare/x and TTFT x/bare for x = full and headless (target: sgtui costs at most 1%, i.e. ratios
<= 1.01). `--budget-s` stops starting rounds that would end past that many seconds after the process started.

    CPU:  .venv/bin/python benchmarks/observer_effect.py [--rounds 3 --steps 4 --prompts 32 --concurrency 8]
    GPU:  PYTHONPATH=. PY benchmarks/observer_effect.py --device cuda --python PY --model DIR
          (vLLM's default flags, CUDA graphs on; 256 prompts x 256 tokens, 64 in flight, 3 rounds x 3 steps)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from server_args import add_server_args, fill_device_defaults  # noqa: E402

from sgtui import stats  # noqa: E402
from sgtui.config import RunConfig  # noqa: E402
from sgtui.events import Request  # noqa: E402
from sgtui.runner import loadgen, procs, workload  # noqa: E402
from sgtui.runner.engines.vllm import VllmEngine  # noqa: E402
from sgtui.session import read_session  # noqa: E402
from sgtui.state import calculate_metrics, load_state, step_summary  # noqa: E402

#: Defaults by device: CPU keeps the small shapes a 2-core box finishes; CUDA is the issue's H200 shape,
#: sized so that 3 variants x 3 rounds fit about 3 minutes once the server is up.
DEFAULTS = {
    "cpu": {"rounds": 3, "steps": 4, "prompts": 32, "concurrency": 8, "max_output_tokens": 64, "max_input_tokens": 128},
    "cuda": {"rounds": 3, "steps": 3, "prompts": 256, "concurrency": 64, "max_output_tokens": 256, "max_input_tokens": 256},
}


def make_cfg(args: argparse.Namespace, work: Path, label: str, url: str = "") -> RunConfig:
    """url: the shared server (external to the run: attached to, never started or stopped by it)."""
    return RunConfig(label=label, backend="vllm", strategy="keep", sync="none", python=args.python, model=args.model,
                     device=args.device, port=procs.free_port(), num_steps=args.steps, num_rollouts=args.prompts,
                     concurrency=args.concurrency, max_input_tokens=args.max_input_tokens,
                     max_output_tokens=args.max_output_tokens, gpu_memory_utilization=args.gpu_memory_utilization,
                     temperature=0.0, warmup_requests=args.concurrency, scrape_interval=1.0, sim_train_seconds=0.0,
                     env={"VLLM_CACHE_ROOT": args.vllm_cache} if args.vllm_cache else {},
                     external_url=url, workdir=str(work / label))


def full_round(args: argparse.Namespace, work: Path, i: int, url: str, ui: bool = True) -> list[tuple[float, float]]:
    """(output tok/s, mean TTFT ms) of each measured step, read back from the session sgtui saved."""
    name = f"{'full' if ui else 'headless'}{i}"
    cfg = make_cfg(args, work, name, url)
    session = work / f"{name}.jsonl"
    err = io.StringIO()
    if ui:
        from sgtui.tui.app import make_app  # here, not at the top: the host may lack textual (then no (a))

        app = make_app("live", runs=[cfg], session_path=session, exports=(), use_last_session=False)
        app.quit_after_finish = True
        asyncio.run(app.run_async(headless=True, size=(200, 50)))
        app.shutdown()
    else:
        from sgtui.headless import run_headless

        # its progress lines and report: not this table's (kept for the error message)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            run_headless([cfg], session, [])
    run = load_state(read_session(session).events).runs[cfg.label]
    if run.status != "ok":
        raise SystemExit(f"{name}: the run ended {run.status}: {[e.message for e in run.errors][:3]}\n{err.getvalue()[-3000:]}")
    out = []
    for step in run.rl_steps[1:]:
        m = step_summary(run.steps[step]).metrics
        out.append((m.output_throughput, m.mean_ttft_ms))
    return out


async def bare_round(args: argparse.Namespace, work: Path, i: int, url: str) -> list[tuple[float, float]]:
    cfg = make_cfg(args, work, f"bare{i}", url)
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    prompts = workload.build_prompts(cfg, cfg.model)
    out = []
    async with loadgen.make_client(cfg.concurrency) as client:
        await loadgen.warmup(client, url, "completions", cfg.served_model_name, prompts[: cfg.warmup_requests],
                             concurrency=cfg.concurrency, max_tokens=min(16, cfg.max_output_tokens), seed=cfg.seed)
        for step in range(1, cfg.num_steps + 1):
            got: list[Request] = []
            t0 = time.perf_counter()
            await loadgen.run_batch(client, url, "completions", cfg.served_model_name, prompts,
                                    concurrency=cfg.concurrency, max_tokens=cfg.max_output_tokens,
                                    temperature=0.0, seed=cfg.seed + 1000 * step, run="", step=step,
                                    emit=got.append)
            m = calculate_metrics(got, time.perf_counter() - t0)
            if m.errors:
                raise SystemExit(f"bare round: {m.errors} requests failed")
            if step > 1:
                out.append((m.output_throughput, m.mean_ttft_ms))
    return out


def bare_in_runner_python(args: argparse.Namespace, work: Path, i: int, url: str) -> list[tuple[float, float]]:
    argv = [args.python, __file__, "--bare-round", str(i), "--work", str(work), "--url", url, "--model", args.model,
            "--python", args.python, "--device", args.device, "--steps", str(args.steps),
            "--prompts", str(args.prompts), "--concurrency", str(args.concurrency),
            "--max-input-tokens", str(args.max_input_tokens), "--max-output-tokens", str(args.max_output_tokens)]
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"bare round failed (exit code {r.returncode}):\n{r.stderr[-3000:]}")
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def start_server(args: argparse.Namespace, work: Path) -> VllmEngine:
    """The one server every variant and round measures (the engine's own flags for the device)."""
    cfg = make_cfg(args, work, "server")
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    engine = VllmEngine(cfg, lambda e: None, Path(cfg.workdir))
    try:
        print(f"  {asyncio.run(engine.start())}: {' '.join(engine.argv)}", file=sys.stderr)
    except BaseException:
        stop_server(engine)
        raise
    return engine


def stop_server(engine: VllmEngine) -> None:
    if engine.child is not None:
        procs.stop_group(engine.child.pgid, 10, engine.child.proc)
        engine.child = None


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: run the finally that stops the server
    ap = argparse.ArgumentParser()
    ap.add_argument("--bare-round", type=int, default=-1, help=argparse.SUPPRESS)  # internal: one (b) round
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    ap.add_argument("--url", default="", help=argparse.SUPPRESS)
    add_server_args(ap, python_default="", python_help="the vLLM interpreter (server, runner and bare client)")
    ap.add_argument("--steps", type=int)
    args = ap.parse_args()
    fill_device_defaults(args, DEFAULTS)
    if not (args.model and args.python):
        from sgtui.cli import CPU_VENVS, TINY_MODEL  # the CPU defaults that `sgtui` itself uses

        args.model = args.model or str(TINY_MODEL)
        args.python = args.python or str(CPU_VENVS["vllm"] / "bin" / "python")
    if args.bare_round >= 0:
        print(json.dumps(asyncio.run(bare_round(args, Path(args.work), args.bare_round, args.url))))
        return
    if not (Path(args.python).exists() and (Path(args.model) / "config.json").exists()):
        raise SystemExit(f"{args.python} or {args.model} is missing: run `bash setup/setup.sh`")
    got: dict[str, list[list[tuple[float, float]]]] = {"full": [], "headless": [], "bare": []}
    try:
        import sgtui.tui.app  # noqa: F401
    except ImportError as e:
        print(f"full (Textual app) variant skipped: {e}", file=sys.stderr)
        del got["full"]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        engine = None
        try:
            t0 = time.monotonic()
            if args.vllm_url:
                url = args.vllm_url.rstrip("/")
            else:
                print(f"starting vLLM ({args.device}) ...", file=sys.stderr)
                engine = start_server(args, work)
                url = engine.base_url
            t_up = time.monotonic()
            print(f"  server up in {t_up - t0:.1f} s at {url}", file=sys.stderr)
            measure = {"full": lambda w, i: full_round(args, w, i, url),
                       "headless": lambda w, i: full_round(args, w, i, url, ui=False),
                       "bare": lambda w, i: bare_in_runner_python(args, w, i, url)}
            longest = 0.0
            for i in range(args.rounds):
                start = time.monotonic()
                if args.budget_s and longest and start - t0 + longest > args.budget_s:
                    print(f"budget: round {i + 1} would end past {args.budget_s:.0f} s; stopping after {i} rounds",
                          file=sys.stderr)
                    break
                order = list(got) if i % 2 == 0 else list(reversed(got))  # a trend over time hits all alike
                for name in order:
                    steps = measure[name](work, i)
                    got[name].append(steps)
                    tput = stats.mean([g[0] for g in steps])
                    ttft = stats.mean([g[1] for g in steps])
                    print(f"round {i + 1} {name:8}: {tput:8.1f} tok/s  TTFT {ttft:7.1f} ms "
                          f"({time.monotonic() - t_up:.0f} s after start-up)", file=sys.stderr)
                longest = max(longest, time.monotonic() - start)
        finally:
            if engine is not None:
                stop_server(engine)
    n = min(len(v) for v in got.values())
    if not n:
        raise SystemExit("no complete round")

    def paired(name: str, k: int) -> list[float]:
        """Per round: `name`'s cost against bare (throughput bare/name, TTFT name/bare)."""
        out = []
        for a, b in zip(got[name][:n], got["bare"][:n]):
            ma, mb = stats.mean([g[k] for g in a]), stats.mean([g[k] for g in b])
            out.append(mb / ma if k == 0 else ma / mb)
        return out

    print(f"{n} rounds x {args.steps - 1} measured steps, {args.prompts} prompts x {args.max_output_tokens} tokens, "
          f"{args.concurrency} in flight, {args.device}, one server")
    print(f"{'':32}{'median':>8}  per round")
    for name in [x for x in ("full", "headless") if x in got]:
        for label, k in (("throughput bare / " + name, 0), (f"mean TTFT {name} / bare", 1)):
            xs = paired(name, k)
            print(f"{label:32}{stats.percentile(xs, 50):8.3f}  " + " ".join(f"{x:.3f}" for x in xs))
    print("target: all <= 1.01. On 2 cores the runner's scraper, the orchestrator and the UI take CPU from "
          "the server itself, and round-to-round spread on a shared machine is often larger than 1%.")


if __name__ == "__main__":
    main()
