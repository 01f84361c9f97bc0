"""GPU check of the persistent megatron-core LoRA GRPO trainer: real steps at TP=1 on one GPU and TP=2 on two.

    python benchmarks/gpu/trainer_check.py --model ~/.cache/sgtui/models/llama-1b-test [--tps 1,2]

Runs exactly what a training-mode run runs (`MegatronTrainer`: one torchrun +
`python -m sgtui.runner.trainer` for all steps, NCCL, bf16, GPTModel with the
local layer spec, no Transformer Engine or Apex) on a synthetic GRPO batch with
made-up engine logprobs, and prints per TP degree: the launch (once), then per
step the parts of the train phase (onload, update, export, offload), the time
of each optimizer update (the first includes CUDA warm-up), tokens/s, peak
memory per rank, and what the ranks still hold on the GPU while offloaded
(torch.cuda.memory_allocated after offload, the CUDA context not counted).

Needs, in the Python that runs it: torch with CUDA, megatron-core (0.19.2 on
Python 3.12, a pure-Python wheel: `pip install --no-deps megatron_core-*.whl`),
transformers, safetensors, orjson. Without --model it builds the ~1.1B test
config once (random bf16 weights, 16 layers, hidden 2048, 32 heads / 8 KV
heads, intermediate 8192) with `python -m sgtui.runner.tinymodel`.
Exit code 0 only if every TP degree trained and exported its adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sgtui.config import RunConfig  # noqa: E402
from sgtui.events import Log, Train  # noqa: E402
from sgtui.runner.tinymodel import WORDS  # noqa: E402
from sgtui.runner.trainer.base import Rollout, TrainerError  # noqa: E402
from sgtui.runner.trainer.megatron_trainer import MegatronTrainer, default_trainer_python  # noqa: E402

DEFAULT_MODEL = Path.home() / ".cache" / "sgtui" / "models" / "llama-1b-test"
ONE_B = ["--layers", "16", "--hidden", "2048", "--heads", "32", "--kv-heads", "8", "--intermediate", "8192",
         "--dtype", "bfloat16"]


def ensure_model(path: Path) -> None:
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return
    print(f"building the ~1.1B test model into {path} (random bf16 weights, once)", flush=True)
    subprocess.run([sys.executable, "-m", "sgtui.runner.tinymodel", "--out", str(path), *ONE_B], check=True,
                   cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def synthetic_batch(n: int, group: int, prompt_words: int, completion_words: int, seed: int) -> list[Rollout]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        g = i // group
        p = random.Random(seed * 7919 + g)  # one prompt per group, as GRPO samples it
        prompt = " ".join(p.choice(WORDS) for _ in range(prompt_words))
        completion = " " + " ".join(rnd.choice(WORDS) for _ in range(completion_words))
        out.append(Rollout(prompt=prompt, completion=completion, group=g, reward=rnd.random()))
    return out


def with_engine_ids(rollouts: list[Rollout], model: Path) -> list[Rollout]:
    """Token ids as an engine would return them, and a made-up engine logprob per token (exercises the
    mismatch path; its value means nothing here)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    out = []
    for r in rollouts:
        p_ids = tok.encode(r.prompt, add_special_tokens=False).ids
        c_ids = tok.encode(r.completion, add_special_tokens=False).ids
        out.append(Rollout(prompt=r.prompt, completion=r.completion, group=r.group, reward=r.reward,
                           prompt_ids=p_ids, completion_ids=c_ids, logprobs=[-2.0] * len(c_ids)))
    return out


def gpu_processes() -> str:
    """pid:MiB of every compute process (nvidia-smi): what the offloaded ranks really hold, CUDA context and
    all, which torch's allocator counters do not see."""
    try:
        r = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True)
    except OSError:
        return "no nvidia-smi"
    return ", ".join(line.replace(", ", ":") for line in r.stdout.split("\n") if line.strip()) or "none"


def run_tp(args, tp: int) -> dict | None:
    work = Path(args.workdir) / f"tp{tp}"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    cpu = args.device == "cpu"
    gpus = [] if cpu else list(range(args.first_gpu, args.first_gpu + tp))
    cfg = RunConfig(label=f"trainer-check-tp{tp}", backend="vllm", strategy="sleep1", model=str(args.model),
                    mode="training", trainer="megatron", device=args.device, tp=tp, gpus=gpus, train_gpus=gpus,
                    trainer_python=default_trainer_python("cpu") if cpu else sys.executable, workdir=str(work),
                    learning_rate=1e-4, dtype="float32" if cpu else "bfloat16",
                    train_micro_batch=args.micro_batch, max_input_tokens=args.prompt_words * 2,
                    max_output_tokens=args.completion_words * 2)
    logs: list[str] = []
    trains: list[Train] = []

    def emit(e) -> None:
        if isinstance(e, Log):
            logs.append(e.line)
            if args.verbose:
                print("   ", e.line, flush=True)
        elif isinstance(e, Train):
            trains.append(e)

    trainer = MegatronTrainer(cfg, emit, work, job_extra={"inner_steps": args.updates})
    batch = with_engine_ids(synthetic_batch(args.rollouts, args.group_size, args.prompt_words,
                                            args.completion_words, seed=tp), Path(args.model))
    results = []

    async def go() -> None:
        t0 = time.perf_counter()
        detail = await trainer.start()
        print(f"TP={tp} launch {time.perf_counter() - t0:.1f} s: {detail}", flush=True)
        print("    offloaded, NVML per process:", gpu_processes(), flush=True)
        try:
            for step in range(1, args.steps + 1):
                t0 = time.perf_counter()
                await trainer.train(step, batch)
                r = dict(trainer.last_result)
                r["wall"] = time.perf_counter() - t0
                r["nvml"] = gpu_processes()
                results.append(r)
        finally:
            await trainer.close()

    try:
        asyncio.run(go())
    except TrainerError as e:
        print(f"TP={tp}: FAILED {e.category}: {e.message}\n  advice: {e.advice}")
        for line in e.log_tail[-25:]:
            print("   |", line)
        return None
    for step, r in enumerate(results, 1):
        ups = ", ".join(f"{s * 1000:.0f}" for s in r["update_seconds"])
        warm = r["update_seconds"][1:] or r["update_seconds"]
        warm_s = sum(warm) / len(warm)
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in r["parts"].items())
        print(f"TP={tp} GPUs {gpus} step {step}: train phase {r['wall']:.2f} s ({parts}); still allocated/reserved after "
              f"offload [MiB]: {r.get('offloaded_mib')}/{r.get('offloaded_reserved_mib')}; NVML after the step {r['nvml']}")
        print(f"    updates [ms]: {ups}; warm update {warm_s * 1000:.0f} ms = "
              f"{r['seq_tokens'] / warm_s:,.0f} tokens/s over {r['samples']} sequences / {r['seq_tokens']} tokens "
              f"({r['tokens']} completion tokens)")
        print(f"    peak memory per rank [MiB]: {r['peak_mib']}; loss {r['loss']:.5f} -> {r['losses'][-1]:.5f}; "
              f"grad norm {r['grad_norm']:.3g}; {r['trainable']:,} trainable params/rank; {r['dtype']}; "
              f"from {r['origin']}")
    return results[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--tps", default="1,2", help="TP degrees to run, e.g. 1,2")
    p.add_argument("--first-gpu", type=int, default=0)
    p.add_argument("--rollouts", type=int, default=64)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompt-words", type=int, default=128)
    p.add_argument("--completion-words", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--updates", type=int, default=3, help="optimizer updates per step on the same batch")
    p.add_argument("--steps", type=int, default=3, help="RL steps of the one trainer launch")
    p.add_argument("--workdir", default=str(REPO / "runs" / "trainer-check"))
    p.add_argument("--verbose", action="store_true", help="print the trainer's log lines")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu: a smoke test of this script with the CPU trainer venv and a small --model")
    args = p.parse_args()
    if args.device == "cpu":
        ok = all(run_tp(args, int(tp)) is not None for tp in args.tps.split(",") if tp)
        return 0 if ok else 1

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this check is for a GPU machine", file=sys.stderr)
        return 2
    n = torch.cuda.device_count()
    print(f"torch {torch.__version__}, {n} x {torch.cuda.get_device_name(0)}")
    try:
        import megatron.core

        print(f"megatron-core {getattr(megatron.core, '__version__', '?')}")
    except ImportError as e:
        print(f"megatron-core is not importable here: {e}", file=sys.stderr)
        return 2
    ensure_model(args.model)
    ok = True
    for tp in [int(x) for x in args.tps.split(",") if x]:
        if args.first_gpu + tp > n:
            print(f"TP={tp}: skipped, needs {tp} GPUs from index {args.first_gpu} ({n} visible)")
            continue
        ok &= run_tp(args, tp) is not None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
