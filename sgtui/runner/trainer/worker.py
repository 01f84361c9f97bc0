"""The megatron-core trainer ranks, launched once per run and fed one RL step at a time.

    python -m torch.distributed.run --nproc_per_node TP ... -m sgtui.runner.trainer --job job.json

Every rank builds the same megatron model (its TP shard) once, then waits on
its control connection (`SGTUI_TRAINER_CONTROL`, a TCP socket of the runner
on 127.0.0.1) for commands, one JSON line each: `step` (the batch file and
where to write the adapter), `push` (the full weights for a `+disk`/`+ipc`
sync: `RankTrainer.push`, acked bucket by bucket with `ack`) or `stop`. All
ranks get every command and run the same micro-batches in the same order, so
their collectives line up; only
rank 0 writes the PEFT adapter and the result. Replies go back on the same
connection (`ready`, `progress`, `result`, `error`), so stdout and stderr are
free for whatever libraries print: both go to the rank's log file
(`rank<N>.log` in the job's directory), which the runner forwards as `log`
events.

Why one launch per run: measured on an H200 with a ~1.1B model, a torchrun
launch per step cost 17-20 s (interpreter, torch and megatron imports, process
group, model build and weight load) against an update of 1.4-2.0 s, so the
train phase was 95 % of every step and decided which engine "won". RL stacks
(verl, slime, NeMo-RL, ART's Megatron service) keep their trainer alive and,
when it shares the GPU with the engine, move its parameters and optimizer
state to pinned host memory between train phases and empty the caching
allocator; this trainer does the same (`offload`/`onload`, timed as parts of
the train phase), so the engine gets the GPU back during the rollout.

Per step the rank also scores the engine's sampled tokens with its own
log-probabilities, in the forward pass the update already does (the first
inner update, before the optimizer moves the adapter): the engine served the
adapter of the previous step, which is exactly the trainer's adapter at that
point. The mismatch (mean and max |delta logprob|, k3 estimate of
KL(engine || trainer)) is an RL-correctness number and the proof that the
weight sync took effect.

Optimizer: torch AdamW over the LoRA parameters only. Megatron's optimizer,
grad clipping and DDP are built for CUDA and for full models; here the
trainable set is small and the world is one TP group, so the only
communication is explicit: replicated LoRA tensors get their gradients
averaged across the TP group (they are equal in exact arithmetic; averaging
keeps the replicas bit-identical), and the grad norm for clipping sums
sharded tensors over ranks and counts replicated ones once.

`--trainer-launch per-step` (the old shape, kept to measure what persistence
saves) launches, runs one step and stops; `save_state` then carries the LoRA
and optimizer state from one launch to the next through `state_dir`.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

#: Environment variable with the runner's control address (host:port) that every rank connects to.
CONTROL_ENV = "SGTUI_TRAINER_CONTROL"


@dataclass
class Job:
    """What the trainer is for, fixed for its whole life (job.json, written once per launch)."""

    model: str
    state_dir: str
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
    save_state: bool = False  # per-step launches: carry the LoRA and optimizer state through state_dir
    offload: bool = True  # move GPU state to pinned host memory between steps (shared placement)

    @classmethod
    def load(cls, path: str | Path) -> "Job":
        return cls(**orjson.loads(Path(path).read_bytes()))


@dataclass
class StepJob:
    """One RL step, sent as a `step` command."""

    step: int
    batch: str
    out_adapter: str
    kl_coef: float | None = None  # None: the run's
    inner_steps: int = 1  # optimizer updates on this batch (tests use >1 to watch the loss fall)
    dump_logits: str = ""  # tests: rank 0 saves full logits of the first sample after training
    verify_frozen: bool = False  # tests: compare every base parameter before and after

    @classmethod
    def from_dict(cls, d: dict) -> "StepJob":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class PushJob:
    """Hand the full weights (LoRA merged, HF layout) to the engine, sent as a `push` command at the run's
    weight sync (`+disk`, `+ipc`; sgtui/runner/trainer/hf_export.py, ipc_wire.py)."""

    step: int
    format: str  # disk (safetensors shards in out_dir) | sglang | vllm (IPC handles, one bucket at a time)
    out_dir: str = ""
    bucket_bytes: int = 512 << 20
    skip_write: bool = False  # tests: the control where the files are not written (nothing reaches disk)

    @classmethod
    def from_dict(cls, d: dict) -> "PushJob":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Channel:
    """This rank's line-oriented link to the runner: commands in, progress and results out."""

    def __init__(self, address: str, rank: int) -> None:
        host, _, port = address.rpartition(":")
        self.rank = rank
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.settimeout(None)
        self._in = self.sock.makefile("rb")
        self.send("hello", pid=os.getpid())

    def send(self, event: str, **fields_: Any) -> None:
        self.sock.sendall(orjson.dumps({"event": event, "rank": self.rank, "t": time.time(), **fields_}) + b"\n")

    def receive(self) -> dict | None:
        """The next command; None when the runner closed the connection (it is gone: stop)."""
        line = self._in.readline()
        return orjson.loads(line) if line.strip() else None


class TrainFailure(Exception):
    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


def _redirect_output(log_dir: Path, rank: int) -> None:
    """fd 1 and fd 2 of this rank -> rank<N>.log: Python warnings, C++ (gloo/NCCL) messages and tracebacks."""
    log_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_dir / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.dup2(fd, 1)
    os.close(fd)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    sys.stdout = sys.stderr


def peak_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class RankTrainer:
    """One rank's model, adapter and optimizer, alive from `ready` to `stop`."""

    def __init__(self, job: Job, ch: Channel) -> None:
        import torch
        import torch.distributed as dist

        from sgtui.runner.trainer import batch as batchmod
        from sgtui.runner.trainer import checkpoint, lora, mcore_model
        from sgtui.runner.trainer import peft_export as pe

        t0 = time.perf_counter()
        self.job, self.ch = job, ch
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if job.device == "cuda":
            torch.cuda.set_device(local_rank)
            self.dev = torch.device("cuda", local_rank)
        else:
            from sgtui.runner.trainer import cpu_shims

            cpu_shims.apply()
            self.dev = torch.device("cpu")
        torch.manual_seed(job.seed)
        from datetime import timedelta

        # Ranks wait in a collective while the engine rolls out only if a rank failed, so a long timeout
        # costs nothing; a short one would kill a healthy trainer during a long rollout.
        dist.init_process_group(backend="nccl" if job.device == "cuda" else "gloo", timeout=timedelta(hours=2),
                                **({"device_id": self.dev} if job.device == "cuda" else {}))
        from megatron.core import parallel_state

        parallel_state.initialize_model_parallel(tensor_model_parallel_size=self.world)
        if job.device == "cuda":
            from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

            model_parallel_cuda_manual_seed(job.seed)
        self.tp, self.tp_rank = self.world, parallel_state.get_tensor_model_parallel_rank()
        self.shape = shape = mcore_model.read_hf_shape(job.model)
        if job.device == "cuda":
            name = shape.dtype if job.dtype == "auto" else job.dtype
            self.dtype = getattr(torch, name if name in ("float32", "bfloat16", "float16") else "bfloat16")
        else:
            self.dtype = torch.float32  # CPU: exact, and bf16 matmuls are slow there
        self.model = mcore_model.build_model(shape, self.tp, self.dtype, self.dev.type)
        mcore_model.load_base_weights(self.model, shape, job.model, self.tp, self.tp_rank)

        self.meta = checkpoint.meta(shape, job, self.tp)
        state = checkpoint.load(job.state_dir, self.meta, self.tp_rank) if job.save_state else None
        if state is not None:
            local, optim_state, self.origin = state["lora"], state["optim"], f"state of step {state['step']}"
        else:
            if job.init_adapter:
                cfg, full = pe.read(job.init_adapter)
                pe.check_compatible(cfg, full, job.lora_rank, job.lora_alpha, job.lora_targets, shape.layers)
                self.origin = f"initial adapter {job.init_adapter}"
            else:
                full = lora.fresh_adapter(shape, job.lora_targets, job.lora_rank, job.seed)
                self.origin = "fresh adapter (B = 0)"
            local, optim_state = pe.split(full, self.tp, self.tp_rank), None
        self.params = lora.attach(self.model, shape, job.lora_targets, job.lora_rank, job.lora_alpha, self.tp, local)
        self.names = sorted(self.params)
        plist = [self.params[n] for n in self.names]
        self.opt = torch.optim.AdamW(plist, lr=job.learning_rate, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8)
        if optim_state is not None:
            self.opt.load_state_dict(optim_state)
        self.replicated = [self.params[n] for n in self.names if lora.is_replicated(n)]
        self.sharded = [self.params[n] for n in self.names if not lora.is_replicated(n)]
        self.n_trainable = sum(p.numel() for p in plist)
        self.tok = batchmod.Tokenizer(job.model)
        self.pushed_adapter: dict | None = None  # the full adapter of the last push (None: the engine has the base)
        self.pushed_digest: list[float] | None = None  # hf_export.Digest of the last push's bytes
        self.on_device = True
        t_loaded = time.perf_counter()
        offload_s = self.offload() if job.offload else 0.0
        if self.rank == 0:
            ch.send("ready", origin=self.origin, trainable=self.n_trainable, load=t_loaded - t0, offload=offload_s,
                    device=job.device, dtype=str(self.dtype), tp=self.tp)

    # -- GPU memory between steps -----------------------------------------------------------------
    def _tensors(self):
        """(owner dict, key) of every tensor the trainer keeps: parameters, module buffers, optimizer state.

        Parameters are moved through `.data` so the optimizer's references stay valid; gradients are
        dropped after every update (zero_grad(set_to_none=True)), so there are none to move."""
        import torch

        seen: set[int] = set()  # a tied embedding is one parameter under two modules
        for m in self.model.modules():
            for p in m._parameters.values():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield p, None
            for k, b in m._buffers.items():
                if b is not None:
                    yield m._buffers, k
        for st in self.opt.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    yield st, k

    def _move(self, to_host: bool) -> float:
        """Every kept tensor to pinned host memory (to_host) or back to the device; seconds, synchronised.

        A no-op on CPU (there is no device memory to give back), where the same loop still runs."""
        import torch

        t0 = time.perf_counter()
        if self.dev.type == "cuda":
            for owner, key in self._tensors():
                t = owner.data if key is None else owner[key]
                if to_host:
                    new = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
                    new.copy_(t, non_blocking=True)
                else:
                    new = t.to(self.dev, non_blocking=True)
                if key is None:
                    owner.data = new
                else:
                    owner[key] = new
            torch.cuda.synchronize()
            if to_host:
                import gc

                gc.collect()  # tensors kept alive only by reference cycles (autograd graphs) go first
                torch.cuda.empty_cache()
        else:
            for _ in self._tensors():
                pass
        self.on_device = not to_host
        return time.perf_counter() - t0

    def offload(self) -> float:
        return self._move(to_host=True) if self.on_device else 0.0

    def onload(self) -> float:
        return self._move(to_host=False) if not self.on_device else 0.0

    # -- one step ---------------------------------------------------------------------------------
    def step(self, sj: StepJob) -> None:
        import torch

        from sgtui.runner.trainer import batch as batchmod
        from sgtui.runner.trainer import checkpoint, grpo, lora, mcore_model
        from sgtui.runner.trainer import peft_export as pe

        job, dev, shape, tp, rank = self.job, self.dev, self.shape, self.tp, self.rank
        t_start = time.perf_counter()
        if job.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        onload_s = self.onload()
        kl_coef = job.kl_coef if sj.kl_coef is None else sj.kl_coef
        samples = batchmod.read_batch(sj.batch)
        encoded = batchmod.encode(samples, self.tok, job.max_len)
        if not encoded:
            raise TrainFailure("OTHER", f"the batch of {len(samples)} rollouts has no completion tokens to train on")
        frozen = ({n: p.detach().clone() for n, p in self.model.named_parameters() if not p.requires_grad}
                  if sj.verify_frozen else None)
        origin = self.origin
        if rank == 0:
            self.ch.send("progress", stage="loaded", origin=origin, trainable=self.n_trainable, samples=len(encoded),
                         seconds=time.perf_counter() - t_start, learning=sum(1 for e in encoded if e.advantage))
        chunks = [encoded[i:i + job.micro_batch] for i in range(0, len(encoded), job.micro_batch)]
        batches = [batchmod.collate(c, self.tok.pad_token_id) for c in chunks]
        total_tokens = int(sum(b.mask.sum().item() for b in batches))
        seq_tokens = sum(len(e.input_ids) for e in encoded)
        losses, pgs, kls, norms, update_s = [], [], [], [], []
        mismatch = batchmod.Mismatch()
        self.model.train()
        t_update = time.perf_counter()
        for it in range(sj.inner_steps):
            t_it = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            step_loss = step_pg = step_kl = 0.0
            for b in batches:
                ids, mask, adv = b.ids.to(dev), b.mask.to(dev), b.adv.to(dev)
                ref = None
                if kl_coef > 0:
                    with torch.no_grad():
                        lora.set_enabled(self.model, False)
                        ref = mcore_model.token_logprobs(self.model, ids, shape, tp)
                        lora.set_enabled(self.model, True)
                logp = mcore_model.token_logprobs(self.model, ids, shape, tp)
                if it == 0:  # the adapter the engine served: before the first optimizer step
                    mismatch.add(logp.detach(), b.engine_logp.to(dev), b.engine_mask.to(dev))
                parts = grpo.grpo_loss(logp, mask, adv, total_tokens, ref, kl_coef)
                parts.loss.backward()
                step_loss += float(parts.loss.detach())
                step_pg += parts.pg
                step_kl += parts.kl
            norms.append(_sync_and_clip(self.replicated, self.sharded, tp, job.max_grad_norm))
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if job.device == "cuda":
                torch.cuda.synchronize()
            update_s.append(time.perf_counter() - t_it)
            losses.append(step_loss)
            pgs.append(step_pg)
            kls.append(step_kl)
            if rank == 0:
                self.ch.send("progress", stage="update", i=it + 1, of=sj.inner_steps, loss=step_loss,
                             grad_norm=norms[-1], seconds=update_s[-1])
        t_trained = time.perf_counter()
        self.origin = f"in memory since step {sj.step}"

        base_unchanged = None
        if frozen is not None:
            current = dict(self.model.named_parameters())
            base_unchanged = bool(frozen) and all(torch.equal(current[n], p) for n, p in frozen.items())
            del frozen
        shards = {n: self.params[n].detach() for n in self.names}
        if job.save_state:
            checkpoint.save(job.state_dir, self.meta, self.tp_rank, shards, self.opt.state_dict(), sj.step)
        full = _gather_full(shards, tp)
        if rank == 0:
            pe.write(sj.out_adapter, full, job.lora_rank, job.lora_alpha, job.lora_targets, base_model=job.model)
        if sj.dump_logits:
            _dump_logits(self.model, encoded[0].input_ids, shape, tp, dev, sj.dump_logits, rank)
        peaks = _all_gather_floats(peak_mib(job.device), dev, self.world)
        import torch.distributed as dist

        dist.barrier()
        t_exported = time.perf_counter()
        offload_s = self.offload() if job.offload else 0.0
        t_end = time.perf_counter()
        # what the rank still holds in torch's allocator between steps (0 when the offload moved everything;
        # the CUDA context and NCCL buffers are outside it: NVML's per-process numbers show those)
        if job.device == "cuda" and os.environ.get("SGTUI_TRAINER_MEMDEBUG"):  # benchmarks/gpu/trainer_check.py
            print(torch.cuda.memory_summary(abbreviated=True), file=sys.stderr, flush=True)
        resident = torch.cuda.memory_allocated() / 2**20 if job.device == "cuda" else 0.0
        reserved = torch.cuda.memory_reserved() / 2**20 if job.device == "cuda" else 0.0
        if rank == 0:
            rewards = [s.reward for s in samples]
            self.ch.send(
                "result", step=sj.step, loss=losses[0], losses=losses, pg=pgs[0], kl=kls[0], grad_norm=norms[0],
                tokens=total_tokens, seq_tokens=seq_tokens, samples=len(encoded), trainable=self.n_trainable,
                seconds=t_end - t_start,
                parts={"onload": onload_s, "update": t_trained - t_update, "export": t_exported - t_trained,
                       "offload": offload_s},
                tokens_per_s=seq_tokens * sj.inner_steps / max(t_trained - t_update, 1e-9), update_seconds=update_s,
                peak_mib=peaks, adapter=str(sj.out_adapter), reward_mean=sum(rewards) / len(rewards),
                base_unchanged=base_unchanged, origin=origin, tp=tp, device=job.device, dtype=str(self.dtype),
                learning=sum(1 for e in encoded if e.advantage != 0.0), mismatch=mismatch.result(),
                offloaded_mib=round(resident, 1), offloaded_reserved_mib=round(reserved, 1))

    # -- full-weight sync ---------------------------------------------------------------------------
    def push(self, pj: PushJob) -> None:
        """Full weights to the engine: every base parameter (one at a time, onto the device if offloaded),
        its TP shards all-gathered, mapped back to HF names, the LoRA merged; packed into buckets of at most
        `bucket_bytes` that rank 0 writes as safetensors shards (`disk`) or that every rank packs on its own
        device and hands over as IPC handles, bucket by bucket, each acked by the runner once the engine has
        loaded it (`sglang`, `vllm`). Rank 0 replies `pushed`: bytes, buckets, seconds (produce: everything
        but the waits for the engine), whether the bytes differ from what the engine served before (the
        runner's proof that a sync changed something), and the update's size relative to the weights."""
        import torch
        import torch.distributed as dist

        from sgtui.runner.trainer import hf_export as hx

        t0 = time.perf_counter()
        job, dev, tp, rank = self.job, self.dev, self.tp, self.rank
        ipc = pj.format in ("sglang", "vllm")
        if pj.format not in ("disk", "sglang", "vllm"):
            raise TrainFailure("CONFIG", f"unknown push format {pj.format!r}")
        if ipc and dev.type == "cpu":
            from sgtui.runner.trainer import ipc_wire

            ipc_wire.use_shared_memory_files()
        full = _gather_full({n: self.params[n].detach().to(dev) for n in self.names}, tp)
        pairs = hx.lora_pairs(full)
        prev = hx.lora_pairs(self.pushed_adapter) if self.pushed_adapter is not None else {}
        scaling = job.lora_alpha / job.lora_rank
        producing = rank == 0 or ipc  # other ranks only take part in the gathers when rank 0 writes
        digest, base_changed, rel = hx.Digest(), False, 0.0
        tmp = hx.start_checkpoint(pj.out_dir) if pj.format == "disk" and rank == 0 else None
        shards: list[tuple[Path, list[str], int]] = []
        kept: list = []  # IPC buffers the engine may still read: the last two
        waited = 0.0
        sent = 0
        pending: list[tuple[str, "torch.Tensor"]] = []

        def flush(last: bool) -> None:
            nonlocal waited, sent
            if not pending:
                return
            size = sum(hx.nbytes(t) for _, t in pending)
            if pj.format == "disk":
                if rank == 0 and not pj.skip_write:
                    path = tmp / f"shard-{len(shards):05d}.tmp"
                    from safetensors.torch import save_file

                    save_file({n: t.detach().to("cpu").contiguous() for n, t in pending}, str(path),
                              metadata={"format": "pt"})
                    shards.append((path, [n for n, _ in pending], size))
                sent += size
                pending.clear()
                return
            from sgtui.runner.trainer import ipc_wire

            buf = torch.empty(size, dtype=torch.uint8, device=dev)
            if dev.type == "cpu":
                buf.share_memory_()
            packed = hx.pack(pending, buf)
            if dev.type == "cuda":
                torch.cuda.synchronize()  # the engine reads the buffer from another process
            kept.append(buf)
            del kept[:-2]
            mine = ipc_wire.sglang_payload(packed) if pj.format == "sglang" else ipc_wire.vllm_handle(packed)
            every = [None] * self.world
            if self.world > 1:
                dist.all_gather_object(every, mine)
            else:
                every = [mine]
            if rank == 0:
                body: dict = {"i": len(shards), "bytes": size, "tensors": len(pending), "last": last}
                if pj.format == "sglang":
                    body["payloads"] = every
                else:
                    merged: dict = {}
                    for h in every:
                        merged.update(h)
                    body["update"] = ipc_wire.vllm_update(packed, merged)
                self.ch.send("bucket", **body)
            shards.append((Path(), [n for n, _ in pending], size))
            sent += size
            pending.clear()
            tw = time.perf_counter()
            cmd = self.ch.receive()
            waited += time.perf_counter() - tw
            if cmd is None or cmd.get("cmd") != "ack":
                raise TrainFailure("WEIGHT_SYNC", f"weight push: expected the runner's ack of bucket "
                                   f"{len(shards) - 1}, got {cmd!r}")

        base = [(n, p) for n, p in self.model.named_parameters() if hx.base_param_name(n)]
        for idx, (n, p) in enumerate(base):
            name = hx.base_param_name(n)
            src = p.data.to(dev, non_blocking=True)
            if tp > 1 and hx.is_tp_sharded(name):
                parts = [torch.empty_like(src) for _ in range(tp)]
                dist.all_gather(parts, src.contiguous())
            else:
                parts = [src]
            if not producing:
                continue
            for hf_name, t in hx.to_hf(name, parts, self.shape, tp):
                pair = pairs.get(hf_name)
                merged = hx.merge_lora(t, pair, scaling).contiguous()
                digest.add(merged)
                if pair is not None:
                    base_changed = base_changed or not torch.equal(merged, t)
                    step_delta = hx.lora_delta(*pair, scaling, t.device)
                    if hf_name in prev:
                        step_delta -= hx.lora_delta(*prev[hf_name], scaling, t.device)
                    rel = max(rel, float(step_delta.norm()) / max(float(t.float().norm()), 1e-30))
                if pending and sum(hx.nbytes(x) for _, x in pending) + hx.nbytes(merged) > pj.bucket_bytes:
                    flush(last=False)
                pending.append((hf_name, merged))
            del parts, src
        flush(last=True)
        if tmp is not None and not pj.skip_write:
            weight_map, k = {}, len(shards)
            for i, (path, names, _) in enumerate(shards, 1):
                final = tmp / hx.shard_name(i, k)
                os.replace(path, final)
                weight_map.update({n: final.name for n in names})
            hx.finish_checkpoint(tmp, pj.out_dir, job.model, weight_map, sent)
        elif tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        kept.clear()
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.ipc_collect()
            torch.cuda.empty_cache()
        if self.world > 1:
            dist.barrier()
        if rank == 0:
            now = digest.as_list()
            changed = (now != self.pushed_digest) if self.pushed_digest is not None else base_changed
            self.ch.send("pushed", step=pj.step, format=pj.format, bytes=sent, buckets=len(shards),
                         tensors=sum(len(x[1]) for x in shards), seconds=time.perf_counter() - t0,
                         produce=time.perf_counter() - t0 - waited, waited=waited, changed=bool(changed),
                         update_rel=rel, digest=now, out_dir=pj.out_dir if pj.format == "disk" else "",
                         written=pj.format == "disk" and not pj.skip_write)
            self.pushed_digest = now
        self.pushed_adapter = {k: v.detach().to("cpu", copy=True) for k, v in full.items()}  # not the live params

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def serve(job: Job, ch: Channel) -> None:
    """Build once, then one command at a time until `stop` (or the runner's connection closes)."""
    trainer = RankTrainer(job, ch)
    try:
        while True:
            cmd = ch.receive()
            if cmd is None or cmd.get("cmd") == "stop":
                break
            if cmd.get("cmd") == "step":
                trainer.step(StepJob.from_dict(cmd["job"]))
            elif cmd.get("cmd") == "push":
                trainer.push(PushJob.from_dict(cmd["job"]))
            else:
                raise TrainFailure("OTHER", f"unknown trainer command {cmd.get('cmd')!r}")
    finally:
        trainer.close()


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
    sq_sharded = torch.as_tensor(sq_sharded, dtype=torch.float32, device=(replicated + sharded)[0].device)
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
    return "TRAINER", msg


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m sgtui.runner.trainer")
    p.add_argument("--job", required=True, help="job.json written by the runner (see worker.Job)")
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    _redirect_output(Path(args.job).parent, rank)
    ch = Channel(os.environ[CONTROL_ENV], rank)
    try:
        serve(Job.load(args.job), ch)
    except BaseException as e:  # noqa: BLE001 - every failure leaves a categorised line and a traceback
        if isinstance(e, KeyboardInterrupt):
            raise
        traceback.print_exc()
        category, message = classify(e)
        try:
            ch.send("error", category=category, message=message[:2000])
        except OSError:
            pass  # the runner is gone: the traceback in the rank log is what remains
        sys.stderr.flush()
        return 3
    return 0
