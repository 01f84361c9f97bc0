"""One GRPO step on one torchrun rank: load, train the adapter, save state, export PEFT.

    python -m torch.distributed.run --nproc_per_node TP ... -m sgtui.runner.trainer --job job.json

Every rank builds the same megatron model (its TP shard), reads the same
batch and runs the same micro-batches; only rank 0 writes the PEFT adapter
and the result line. Stdout carries JSON lines only (progress, result,
error); anything else a library prints goes to the rank's log file
(`rank<N>.log` next to the job), which the runner forwards as `log` events.

Optimizer: torch AdamW over the LoRA parameters only. Megatron's optimizer,
grad clipping and DDP are built for CUDA and for full models; here the
trainable set is small and the world is one TP group, so the only
communication is explicit: replicated LoRA tensors get their gradients
averaged across the TP group (they are equal in exact arithmetic; averaging
keeps the replicas bit-identical), and the grad norm for clipping sums
sharded tensors over ranks and counts replicated ones once.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Job:
    """What the runner asks of one trainer launch (written as job.json next to the batch)."""

    model: str
    batch: str
    state_dir: str
    out_adapter: str
    step: int = 1
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"])
    learning_rate: float = 1e-4
    kl_coef: float = 0.0
    init_adapter: str = ""
    device: str = "cpu"
    dtype: str = "auto"
    micro_batch: int = 8
    max_len: int = 2048
    seed: int = 0
    max_grad_norm: float = 1.0
    inner_steps: int = 1  # optimizer updates on this batch (tests use >1 to watch the loss fall)
    dump_logits: str = ""  # tests: rank 0 saves full logits of the first sample after training
    verify_frozen: bool = False  # tests: compare every base parameter before and after

    @classmethod
    def load(cls, path: str | Path) -> "Job":
        return cls(**orjson.loads(Path(path).read_bytes()))

    def dump(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self.__dict__, option=orjson.OPT_INDENT_2))


class Out:
    """JSON lines to the real stdout; everything else written to fd 1 (Python or C++) goes to the rank log."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._fd = os.dup(1)
        os.dup2(2, 1)  # after _redirect_stderr: fd 1 and fd 2 both write the rank log now
        sys.stdout = sys.stderr

    def send(self, event: str, **fields: Any) -> None:
        os.write(self._fd, orjson.dumps({"event": event, "rank": self.rank, "t": time.time(), **fields}) + b"\n")


class TrainFailure(Exception):
    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


def _redirect_stderr(log_dir: Path, rank: int) -> None:
    """fd 2 of this rank -> rank<N>.log: Python warnings, C++ (gloo/NCCL) messages and tracebacks alike."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_dir / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def peak_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run(job: Job, out: Out) -> None:
    import torch
    import torch.distributed as dist

    from sgtui.runner.trainer import batch as batchmod
    from sgtui.runner.trainer import checkpoint, grpo, lora, mcore_model
    from sgtui.runner.trainer import peft_export as pe

    t_start = time.perf_counter()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if job.device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        from sgtui.runner.trainer import cpu_shims

        cpu_shims.apply()
        dev = torch.device("cpu")
        backend = "gloo"
    torch.manual_seed(job.seed)
    from datetime import timedelta

    dist.init_process_group(backend=backend, timeout=timedelta(minutes=10),
                            **({"device_id": dev} if job.device == "cuda" else {}))
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)
    if job.device == "cuda":
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(job.seed)
    tp, tp_rank = world, parallel_state.get_tensor_model_parallel_rank()

    shape = mcore_model.read_hf_shape(job.model)
    if job.device == "cuda":
        name = shape.dtype if job.dtype == "auto" else job.dtype
        dtype = getattr(torch, name if name in ("float32", "bfloat16", "float16") else "bfloat16")
    else:
        dtype = torch.float32  # CPU: exact, and bf16 matmuls are slow there
    model = mcore_model.build_model(shape, tp, dtype, "cuda" if job.device == "cuda" else "cpu")
    mcore_model.load_base_weights(model, shape, job.model, tp, tp_rank)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()} if job.verify_frozen else None

    meta = checkpoint.meta(shape, job, tp)
    state = checkpoint.load(job.state_dir, meta, tp_rank)
    if state is not None:
        local, optim_state, origin = state["lora"], state["optim"], f"state of step {state['step']}"
    else:
        if job.init_adapter:
            cfg, full = pe.read(job.init_adapter)
            pe.check_compatible(cfg, full, job.lora_rank, job.lora_alpha, job.lora_targets, shape.layers)
            origin = f"initial adapter {job.init_adapter}"
        else:
            full = lora.fresh_adapter(shape, job.lora_targets, job.lora_rank, job.seed)
            origin = "fresh adapter (B = 0)"
        local, optim_state = pe.split(full, tp, tp_rank), None
    params = lora.attach(model, shape, job.lora_targets, job.lora_rank, job.lora_alpha, tp, local)
    names = sorted(params)
    plist = [params[n] for n in names]
    opt = torch.optim.AdamW(plist, lr=job.learning_rate, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
    if optim_state is not None:
        opt.load_state_dict(optim_state)
    replicated = [params[n] for n in names if lora.is_replicated(n)]
    sharded = [params[n] for n in names if not lora.is_replicated(n)]
    n_trainable = sum(p.numel() for p in plist)

    tok = batchmod.Tokenizer(job.model)
    pad_id = tok.pad_token_id
    samples = batchmod.read_batch(job.batch)
    encoded = batchmod.encode(samples, tok, job.max_len)
    if not encoded:
        raise TrainFailure("OTHER", f"the batch of {len(samples)} rollouts has no completion tokens to train on")
    t_loaded = time.perf_counter()
    if rank == 0:
        out.send("progress", stage="loaded", origin=origin, trainable=n_trainable, samples=len(encoded),
                 seconds=t_loaded - t_start, learning=sum(1 for e in encoded if e.advantage != 0.0))

    chunks = [encoded[i:i + job.micro_batch] for i in range(0, len(encoded), job.micro_batch)]
    batches = [batchmod.collate(c, pad_id) for c in chunks]
    total_tokens = int(sum(m.sum().item() for _, m, _ in batches))
    seq_tokens = sum(len(e.input_ids) for e in encoded)
    losses, pgs, kls, norms, update_s = [], [], [], [], []
    model.train()
    for it in range(job.inner_steps):
        t_update = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        step_loss = step_pg = step_kl = 0.0
        for ids, mask, adv in batches:
            ids, mask, adv = ids.to(dev), mask.to(dev), adv.to(dev)
            ref = None
            if job.kl_coef > 0:
                with torch.no_grad():
                    lora.set_enabled(model, False)
                    ref = mcore_model.token_logprobs(model, ids, shape, tp)
                    lora.set_enabled(model, True)
            logp = mcore_model.token_logprobs(model, ids, shape, tp)
            parts = grpo.grpo_loss(logp, mask, adv, total_tokens, ref, job.kl_coef)
            parts.loss.backward()
            step_loss += float(parts.loss.detach())
            step_pg += parts.pg
            step_kl += parts.kl
        norms.append(_sync_and_clip(replicated, sharded, tp, job.max_grad_norm))
        opt.step()
        if job.device == "cuda":
            torch.cuda.synchronize()
        update_s.append(time.perf_counter() - t_update)
        losses.append(step_loss)
        pgs.append(step_pg)
        kls.append(step_kl)
        if rank == 0:
            out.send("progress", stage="update", i=it + 1, of=job.inner_steps, loss=step_loss, grad_norm=norms[-1],
                     seconds=update_s[-1])
    t_trained = time.perf_counter()

    base_unchanged = None
    if frozen is not None:
        current = dict(model.named_parameters())
        base_unchanged = all(torch.equal(current[_base_name(n, current)], p) for n, p in frozen.items())

    shards = {n: params[n].detach() for n in names}
    checkpoint.save(job.state_dir, meta, tp_rank, shards, opt.state_dict(), job.step)
    full = _gather_full(shards, tp)
    if rank == 0:
        pe.write(job.out_adapter, full, job.lora_rank, job.lora_alpha, job.lora_targets, base_model=job.model)
    if job.dump_logits:
        _dump_logits(model, encoded[0].input_ids, shape, tp, dev, job.dump_logits, rank)
    peaks = _all_gather_floats(peak_mib(job.device), dev, world)
    dist.barrier()
    t_end = time.perf_counter()
    if rank == 0:
        rewards = [s.reward for s in samples]
        out.send("result", step=job.step, loss=losses[0], losses=losses, pg=pgs[0], kl=kls[0], grad_norm=norms[0],
                 tokens=total_tokens, seq_tokens=seq_tokens, samples=len(encoded), trainable=n_trainable,
                 seconds=t_end - t_start, phases={"load": t_loaded - t_start, "train": t_trained - t_loaded,
                                                  "save_export": t_end - t_trained},
                 tokens_per_s=seq_tokens * job.inner_steps / max(t_trained - t_loaded, 1e-9),
                 update_seconds=update_s,
                 peak_mib=peaks, adapter=str(job.out_adapter), reward_mean=sum(rewards) / len(rewards),
                 base_unchanged=base_unchanged, origin=origin, tp=tp, device=job.device, dtype=str(dtype),
                 learning=sum(1 for e in encoded if e.advantage != 0.0))
    dist.destroy_process_group()


def _base_name(name: str, current: dict) -> str:
    """Base parameter names gain `.base` once LoRA wraps their layer."""
    if name in current:
        return name
    head, _, leaf = name.rpartition(".")
    return f"{head}.base.{leaf}"


def _sync_and_clip(replicated: list, sharded: list, tp: int, max_norm: float) -> float:
    """Average replicated grads over the TP group, then clip by the global norm; returns the norm."""
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in replicated if p.grad is not None]
    if tp > 1 and grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= tp
        off = 0
        for g in grads:
            g.copy_(flat[off:off + g.numel()].view_as(g))
            off += g.numel()
    sq_sharded = sum((p.grad.float() ** 2).sum() for p in sharded if p.grad is not None)
    sq_sharded = torch.as_tensor(sq_sharded, dtype=torch.float32, device=_dev(replicated + sharded))
    if tp > 1:
        dist.all_reduce(sq_sharded)
    sq_rep = sum(float((g.float() ** 2).sum()) for g in grads)
    norm = (float(sq_sharded) + sq_rep) ** 0.5
    if max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for p in replicated + sharded:
            if p.grad is not None:
                p.grad.mul_(scale)
    return norm


def _dev(params: list):
    return params[0].device


def _gather_full(shards: dict, tp: int) -> dict:
    """Every rank's shards, merged into the full adapter (all ranks end with it; rank 0 writes it)."""
    import torch
    import torch.distributed as dist

    from sgtui.runner.trainer import peft_export as pe

    if tp == 1:
        return {k: v.cpu() for k, v in shards.items()}
    per_rank: list[dict] = [dict() for _ in range(tp)]
    for k, v in shards.items():
        bufs = [torch.empty_like(v) for _ in range(tp)]
        dist.all_gather(bufs, v.contiguous())
        for r in range(tp):
            per_rank[r][k] = bufs[r].cpu()
    return pe.merge(per_rank)


def _all_gather_floats(x: float, dev, world: int) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=dev)
    bufs = [torch.zeros_like(t) for _ in range(world)]
    dist.all_gather(bufs, t)
    return [round(float(b.item()), 1) for b in bufs]


def _dump_logits(model, ids: list[int], shape, tp: int, dev, path: str, rank: int) -> None:
    import torch

    from sgtui.runner.trainer import mcore_model

    model.eval()
    with torch.no_grad():
        x = torch.tensor([ids], device=dev)
        logits = mcore_model.local_logits(model, x)
        full = mcore_model.gather_logits(logits, shape.vocab) if tp > 1 else logits[..., :shape.vocab]
    if rank == 0:
        torch.save({"input_ids": ids, "logits": full[0].float().cpu()}, path)


def classify(exc: BaseException) -> tuple[str, str]:
    """(category, message) of an exception raised in a rank."""
    from sgtui.runner.trainer.mcore_model import CheckpointMismatch, UnsupportedModel
    from sgtui.runner.trainer.peft_export import AdapterMismatch

    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TrainFailure):
        return exc.category, str(exc)
    if isinstance(exc, (CheckpointMismatch, AdapterMismatch)):
        return "CHECKPOINT", msg
    if isinstance(exc, UnsupportedModel):
        return "CONFIG", msg
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "OOM", msg
    if "nccl" in str(exc).lower() or name == "DistBackendError":
        return "NCCL", msg
    if isinstance(exc, (ImportError, ModuleNotFoundError)):
        return "IMPORT_ERROR", msg
    return "OTHER", msg


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m sgtui.runner.trainer")
    p.add_argument("--job", required=True, help="job.json written by the runner (see worker.Job)")
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    job = Job.load(args.job)
    _redirect_stderr(Path(args.job).parent, rank)
    out = Out(rank)
    try:
        run(job, out)
    except BaseException as e:  # noqa: BLE001 - every failure leaves a categorised line and a traceback
        if isinstance(e, KeyboardInterrupt):
            raise
        traceback.print_exc()
        category, message = classify(e)
        out.send("error", category=category, message=message[:2000])
        sys.stderr.flush()
        return 3
    return 0
