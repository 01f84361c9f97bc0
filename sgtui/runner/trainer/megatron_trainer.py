"""The megatron-core trainer, runner side: launched once per run (torchrun, its own process group), fed
one RL step at a time over a control socket, stopped at the end of the run.

At the run's start it writes `<workdir>/train/job.json` and runs

    TRAINER_PYTHON -m torch.distributed.run --nproc_per_node TP --master_addr 127.0.0.1
        --master_port <free> -m sgtui.runner.trainer --job .../job.json

(gloo on CPU, NCCL on the training GPUs via CUDA_VISIBLE_DEVICES) with
`SGTUI_TRAINER_CONTROL` set to a TCP socket this runner listens on
(127.0.0.1). Every rank connects, says hello, builds the model, and rank 0
says `ready`; the launch is the `trainer_start` phase. Per step the rollouts
go to `<workdir>/train/step-N/batch.jsonl`, a `step` command goes to every
rank, and rank 0's `result` (loss, the train phase's parts: onload, update,
export, offload; the logprob mismatch) becomes the `train` event. The ranks'
logs (`rank<N>.log`, `torchrun.log`) are forwarded as `log` events. A rank
that dies closes its connection: the step fails at once with a TRAINER error
carrying the log tail, and the whole group is stopped.

A full-weight sync (`+disk`, `+ipc`) asks the running trainer to `push`: the
ranks gather, merge and either write a checkpoint or hand the engine one
bucket of IPC handles at a time (`bucket` messages, each acked once the
engine loaded it); rank 0's `pushed` ends it. Silence from the ranks for
--startup-timeout seconds stops the group (WEIGHT_SYNC), so a hung collective
is a categorized failure, not a hung run.

`trainer_launch = "per-step"` keeps the old shape (a launch, one step and a
stop inside every train phase, state carried on disk), to measure what the
persistent trainer saves: its launch is a part of each train phase.

No torch import here: the runner may live in a venv without megatron-core
(the CPU trainer has its own venv, made by `sgtui setup --cpu`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

import orjson

from sgtui import errors, pkgpath
from sgtui.config import cuda_env
from sgtui.events import Log, Proc, Train
from sgtui.runner import procs
from sgtui.runner.trainer.base import Rollout, Trainer, TrainerError

#: Where `sgtui setup --cpu` (setup_scripts/trainer_cpu.sh) puts the CPU trainer venv (name keyed by versions).
CPU_VENV_GLOB = "trainer-cpu-mcore*"
STOP_GRACE = 5.0
#: After a rank's connection closed: how long torchrun gets to notice, stop the other ranks and write its
#: root-cause report, which names the rank and its exit code.
DEATH_REPORT_S = 8.0
CONTROL_ENV = "SGTUI_TRAINER_CONTROL"  # as worker.CONTROL_ENV (worker imports torch-free, but lives in the rank)
def default_trainer_python(device: str) -> str:
    """The CPU trainer venv made by `sgtui setup --cpu`; on GPU the runner's own interpreter."""
    if device == "cuda":
        return sys.executable
    cache = Path(os.environ.get("SGTUI_CACHE", str(Path.home() / ".cache" / "sgtui")))
    venvs = sorted(p for p in (cache / "venvs").glob(CPU_VENV_GLOB) if (p / ".sgtui-ok").exists())
    return str(venvs[-1] / "bin" / "python") if venvs else ""


_ROOT_RANK = re.compile(r"rank\s*:\s*(\d+)")
_ROOT_EXIT = re.compile(r"exitcode\s*:\s*(-?\d+)")


def rank_failure(torchrun_log: list[str]) -> tuple[int, int] | None:
    """(rank, exit code) of the root cause torchrun reports when a rank fails, if it reported one."""
    text = "\n".join(torchrun_log)
    at = text.rfind("Root Cause")
    if at < 0:
        return None
    rank, code = _ROOT_RANK.search(text, at), _ROOT_EXIT.search(text, at)
    if not (rank and code):
        return None
    return int(rank.group(1)), int(code.group(1))


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def train_parts(seconds: float, result: dict, launch: float | None = None) -> dict[str, float]:
    """Where a step's train time went: the ranks time onload, update, export and offload; what is left of the
    runner's wall time is `other` (the batch file, the command and the reply). A per-step launch
    (`launch`: torchrun, imports, model build and load) is a part of its own."""
    parts = {k: float(v) for k, v in (result.get("parts") or {}).items()}
    if launch is not None:
        parts = {"launch": launch, **parts}
    parts["other"] = max(0.0, seconds - sum(parts.values()))
    return parts


class MegatronTrainer(Trainer):
    scores_rollouts = True

    def __init__(self, cfg, emit, workdir: Path, job_extra: dict | None = None) -> None:
        super().__init__(cfg, emit, workdir)
        self.train_dir = Path(workdir) / "train"
        self.state_dir = self.train_dir / "state"
        self.job_extra = dict(job_extra or {})  # tests: per-step options (inner_steps, dump_logits, verify_frozen)
        self.push_extra: dict = {}  # tests: push options (skip_write: the control that writes no files)
        self.per_step = cfg.trainer_launch == "per-step"
        self._proc: asyncio.subprocess.Process | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ranks: dict[int, asyncio.StreamWriter] = {}
        self._rank_pids: dict[int, int] = {}
        # torchrun starts every rank in a session (process group) of its own: each is announced and stopped
        # by its own group too, or a killed torchrun would leave ranks holding GPU memory, and NVML would
        # count their memory as "other"
        self._rank_groups: list[int] = []
        self._inbox: asyncio.Queue[tuple[int, dict | None]] = asyncio.Queue()
        self._followers: dict[Path, procs.LogFollower] = {}
        self.launches = 0
        self.last_result: dict = {}
        self.ready: dict = {}
        self._step = 0

    @property
    def persistent(self) -> bool:
        return not self.per_step

    # -- launch -----------------------------------------------------------------------------------
    def python(self) -> str:
        py = self.cfg.trainer_python or default_trainer_python(self.cfg.device)
        if not py or not Path(py).exists():
            raise TrainerError("IMPORT_ERROR", f"no trainer interpreter ({py or 'none found'})",
                               advice="run `sgtui setup --cpu` or pass --trainer-python with an "
                                      "interpreter that has torch, megatron-core, transformers and safetensors")
        return py

    def _job(self) -> dict:
        cfg = self.cfg
        return {
            "model": cfg.model, "state_dir": str(self.state_dir),
            "lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha, "lora_targets": list(cfg.lora_targets),
            "learning_rate": cfg.learning_rate, "kl_coef": cfg.kl_coef, "init_adapter": cfg.initial_adapter,
            "device": cfg.device, "dtype": cfg.dtype, "micro_batch": cfg.train_micro_batch,
            "max_len": cfg.effective_max_model_len(), "seed": cfg.seed, "save_state": self.per_step,
            # Split placement: the trainer has GPUs of its own and keeps its state there between steps; a
            # per-step launch exits after its step, which frees everything anyway.
            "offload": cfg.placement == "shared" and not self.per_step,
        }

    def _env(self, control: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = pkgpath.child_pythonpath(env.get("PYTHONPATH", ""))  # sgtui alone (sgtui/pkgpath.py)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        env[CONTROL_ENV] = control
        env[procs.MARKER_RUN] = self.cfg.label
        env[procs.MARKER_OWNER] = str(os.getpid())
        if self.cfg.device == "cuda":
            env.update(cuda_env(self.cfg.train_gpus or self.cfg.gpus))
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    async def start(self) -> str:
        """Launch the persistent trainer (the run's `trainer_start` phase); per-step launches start nothing."""
        if self.per_step:
            return ""
        if not self.cfg.model:
            raise TrainerError("MODEL_PATH", "the megatron trainer needs --model (a local HF directory)")
        t0 = time.perf_counter()
        ready = await self._launch()
        took = time.perf_counter() - t0
        return (f"torchrun TP={self.cfg.train_tp or self.cfg.tp} ready in {took:.1f} s (model and adapter {ready.get('load', 0):.1f} s"
                + (f", offloaded in {ready['offload']:.2f} s" if ready.get("offload") else "")
                + f"; {ready.get('trainable')} trainable params, from {ready.get('origin')})")

    async def _launch(self) -> dict:
        """torchrun in its own group; returns rank 0's `ready` once every rank is connected."""
        self.train_dir.mkdir(parents=True, exist_ok=True)
        for old in self.train_dir.glob("*.log"):
            old.unlink()
        self._followers = {}
        job_path = self.train_dir / "job.json"
        job_path.write_bytes(orjson.dumps(self._job(), option=orjson.OPT_INDENT_2))
        self._inbox = asyncio.Queue()
        self._ranks = {}
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=1 << 24)
        port = self._server.sockets[0].getsockname()[1]
        nproc = max(1, self.cfg.train_tp or self.cfg.tp)
        argv = [self.python(), "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
                "--master_addr", "127.0.0.1", "--master_port", str(procs.free_port()),
                "-m", "sgtui.runner.trainer", "--job", str(job_path)]
        log = open(self.train_dir / "torchrun.log", "ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=self._env(f"127.0.0.1:{port}"),
                cwd=str(self.train_dir), start_new_session=True)
        except OSError as e:
            raise TrainerError("IMPORT_ERROR", f"cannot start the trainer: {e}") from None
        finally:
            log.close()
        self.launches += 1
        self.emit(Proc(t=time.time(), run=self.cfg.label, role="trainer", pid=self._proc.pid, pgid=self._proc.pid,
                       argv=argv))
        self.ready = await self._await("ready", timeout=self.cfg.startup_timeout)
        # Every rank says hello before joining the process group that rank 0's `ready` needed; their hellos
        # may still sit in the reader tasks' buffers.
        for _ in range(100):
            if len(self._ranks) >= nproc:
                break
            await asyncio.sleep(0.05)
        self._announce_ranks()
        self._log(f"trainer ready: {self.ready}")
        return self.ready

    def _announce_ranks(self) -> None:
        torchrun = self._proc.pid if self._proc is not None else 0
        for rank, pid in sorted(self._rank_pids.items()):
            try:
                pgid = os.getpgid(pid)
            except (ProcessLookupError, PermissionError):
                continue
            if pgid in (torchrun, os.getpgrp()) or pgid in self._rank_groups:
                continue
            self._rank_groups.append(pgid)
            self.emit(Proc(t=time.time(), run=self.cfg.label, role="trainer", pid=pid, pgid=pgid,
                           argv=[f"trainer rank {rank}"]))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One rank's connection: its hello names the rank; every later line goes to the inbox, EOF as None."""
        rank = -1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if msg.get("event") == "hello":
                    rank = int(msg.get("rank", 0))
                    self._ranks[rank] = writer
                    self._rank_pids[rank] = int(msg.get("pid", 0))
                self._inbox.put_nowait((rank, msg))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        self._inbox.put_nowait((rank, None))

    async def _next(self, timeout: float) -> tuple[int, dict | None] | None:
        """The next message of any rank (None: nothing within timeout); torchrun's exit comes as an `exit`.

        Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that lands as the inner get completes
        (gh-86296), and the ranks send a message per update: a cancelled step kept waiting for a result that
        10,000 inner updates away (seen on a loaded 2-core box). `asyncio.wait` lets the cancellation through."""
        if not self._inbox.empty():
            return self._inbox.get_nowait()
        getter = asyncio.ensure_future(self._inbox.get())
        try:
            done, _ = await asyncio.wait({getter}, timeout=timeout)
        finally:
            if not getter.done():
                getter.cancel()
        if done:
            return getter.result()
        self.pump_logs()
        if self._proc is not None and self._proc.returncode is not None:
            return -1, {"event": "exit", "code": self._proc.returncode}
        return None

    async def _await(self, kind: str | tuple[str, ...], timeout: float | None = None,
                     timeout_category: str = "STARTUP_TIMEOUT") -> dict:
        """Rank 0's next `kind` message (or any of several kinds); progress lines become logs; a rank's error, a
        lost connection or torchrun's exit fails (the group stopped, the error explained). Cancelling stops the
        group too. No message within `timeout`: the group is stopped, a `timeout_category` error raised."""
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    self.stop_now()
                    raise TrainerError(timeout_category, f"the trainer sent no {' or '.join(map(repr, kinds))} "
                                       f"within {timeout:.0f} s", self._tail(),
                                       "the trainer ranks hang (a collective waits for a rank that is gone?): "
                                       "see the rank logs; the whole group was stopped")
                got = await self._next(0.5)
                if got is None:
                    continue
                rank, msg = got
                if msg is None:
                    msg = {"event": "eof", "rank": rank}
                event = msg.get("event")
                if event in ("error", "eof", "exit"):
                    raise await self._fail(msg)
                if event == "progress":
                    self._log(_progress_text(self._step, msg))
                elif event in kinds and rank == 0:
                    return msg
        except asyncio.CancelledError:
            await asyncio.shield(self._stop())
            raise
        finally:
            self.pump_logs()

    def _send_all(self, cmd: dict) -> None:
        line = orjson.dumps(cmd) + b"\n"
        for w in self._ranks.values():
            w.write(line)

    async def train(self, step: int, rollouts: list[Rollout]) -> str:
        if not rollouts:
            raise TrainerError("OTHER", f"step {step}: no successful rollouts to train on")
        if not self.cfg.model:
            raise TrainerError("MODEL_PATH", "the megatron trainer needs --model (a local HF directory)")
        t0 = time.perf_counter()
        self._step = step
        step_dir = self.train_dir / f"step-{step}"
        step_dir.mkdir(parents=True, exist_ok=True)
        (step_dir / "batch.jsonl").write_bytes(b"".join(
            orjson.dumps({"prompt": r.prompt, "completion": r.completion, "group": r.group, "reward": r.reward,
                          "prompt_ids": r.prompt_ids, "completion_ids": r.completion_ids, "logprobs": r.logprobs})
            + b"\n" for r in rollouts))
        launch = None
        if self.per_step:
            await self._launch()
            launch = time.perf_counter() - t0
        elif self._proc is None:
            raise TrainerError("TRAINER", "the trainer is not running (start() was not called or it stopped)")
        sj = {"step": step, "batch": str(step_dir / "batch.jsonl"),
              "out_adapter": str(Path(self.workdir) / "adapters" / f"step-{step}"), **self.job_extra}
        self._send_all({"cmd": "step", "job": sj})
        result = await self._await("result")
        if self.per_step:
            await self.close()
        seconds = time.perf_counter() - t0
        self.last_result = result
        (step_dir / "result.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        mm = result.get("mismatch") or {}
        self._log(f"step {step}: loss {result['loss']:.6g}, {result['tokens']} completion tokens, "
                  f"{result['tokens_per_s']:.1f} tok/s, parts {result.get('parts')}, peak MiB {result['peak_mib']}, "
                  f"from {result['origin']}"
                  + (f"; logprob mismatch mean |d| {mm['mean_abs']:.3g}, max {mm['max_abs']:.3g}, k3 {mm['k3']:.3g} "
                     f"over {mm['tokens']} tokens" if mm else "; no engine logprobs: no mismatch"))
        rewards = [r.reward for r in rollouts]
        self.emit(Train(t=time.time(), run=self.cfg.label, step=step, loss=float(result["loss"]),
                        tokens=int(result["tokens"]), seconds=seconds, adapter_path=result["adapter"],
                        peak_mib=list(result["peak_mib"]), reward_mean=sum(rewards) / len(rewards), simulated=False,
                        parts=train_parts(seconds, result, launch), mismatch=mm))
        return result["adapter"]

    async def push(self, step: int, fmt: str, out_dir: str,
                   on_bucket: Callable[[dict], Awaitable[None]] | None = None) -> dict:
        """Full weights to the engine (worker.PushJob): `disk` writes a checkpoint into out_dir; an IPC format
        sends `bucket` messages, each handed to `on_bucket` (the engine loads it) and then acked to every
        rank so they may reuse the buffer. Returns rank 0's `pushed` reply. No sign of life from the
        ranks for --startup-timeout seconds stops the group: a WEIGHT_SYNC error, not a hang."""
        if self._proc is None or self.per_step:
            raise TrainerError("TRAINER", "a full-weight sync needs the persistent trainer running "
                               "(--trainer-launch persistent)")
        self._step = step
        job = {"step": step, "format": fmt, "out_dir": out_dir,
               "bucket_bytes": max(1, int(self.cfg.sync_bucket_mb)) << 20, **self.push_extra}
        self._send_all({"cmd": "push", "job": job})
        while True:
            msg = await self._await(("bucket", "pushed"), timeout=self.cfg.startup_timeout,
                                    timeout_category="WEIGHT_SYNC")
            if msg.get("event") == "pushed":
                self._log(f"step {step}: pushed {msg.get('bytes')} bytes in {msg.get('buckets')} bucket(s) "
                          f"({fmt}), produce {msg.get('produce', 0):.3f} s, changed {msg.get('changed')}, "
                          f"update {msg.get('update_rel', 0):.3g} of the weights")
                return msg
            if on_bucket is None:
                raise TrainerError("WEIGHT_SYNC", f"the trainer sent an IPC bucket for a {fmt} push")
            await on_bucket(msg)
            self._send_all({"cmd": "ack"})

    # -- logs and errors --------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        self.emit(Log(t=time.time(), run=self.cfg.label, source="trainer", line=line))

    def pump_logs(self) -> None:
        """Forward new lines of torchrun.log and every rank<N>.log as `log` events (rank-prefixed)."""
        for path in [self.train_dir / "torchrun.log", *sorted(self.train_dir.glob("rank*.log"))]:
            f = self._followers.get(path)
            if f is None:
                if not path.exists():
                    continue
                f = self._followers[path] = procs.LogFollower(path)
            prefix = f"[{path.stem}] "
            for line in f.read_new():
                if line.strip():
                    self._log(prefix + line)

    def _tail(self) -> list[str]:
        return procs.log_tail(self.train_dir / "rank0.log", 30) + procs.log_tail(self.train_dir / "torchrun.log", 20)

    async def _fail(self, failure: dict) -> TrainerError:
        """The trainer failed: give torchrun a moment to stop the other ranks and write its root-cause report
        (which names the rank and its exit code), stop the group, explain."""
        proc = self._proc
        if failure.get("event") != "error" and proc is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=DEATH_REPORT_S)
        await self._stop()
        self.pump_logs()
        return self._error(failure)

    def _error(self, failure: dict) -> TrainerError:
        torchrun_tail = procs.log_tail(self.train_dir / "torchrun.log", 60)
        if failure.get("event") == "error":
            rank = int(failure.get("rank", 0))
            tail = procs.log_tail(self.train_dir / f"rank{rank}.log", 40)
            category = failure.get("category", "TRAINER")
            advice = _ADVICE.get(category) or errors.categorize(tail)[1]
            return TrainerError(category, f"trainer rank {rank}: {failure.get('message', '')}"[:1000], tail, advice)
        dead = rank_failure(torchrun_tail)
        if dead is not None:
            rank, code = dead
            tail = procs.log_tail(self.train_dir / f"rank{rank}.log", 30) + torchrun_tail[-20:]
            category, advice = errors.categorize(tail, default="TRAINER")
            if category in ("IMPORT_ERROR", "OTHER"):
                category, advice = "TRAINER", _ADVICE["TRAINER"]
            return TrainerError(category, f"trainer rank {rank} died: {describe_exit(code)}", tail, advice)
        tail = torchrun_tail[-40:]
        category, advice = errors.categorize(tail, default="TRAINER")
        if category == "OTHER":
            category, advice = "TRAINER", _ADVICE["TRAINER"]
        if failure.get("event") == "eof":
            what = f"rank {failure.get('rank')} closed its connection"
        else:
            code = failure.get("code")
            what = describe_exit(code) if code else "no result line"
        return TrainerError(category, f"the trainer ended without a result ({what})", tail, advice)

    # -- teardown ---------------------------------------------------------------------------------
    async def close(self) -> None:
        """Ask the ranks to stop, wait for torchrun a little, then stop the group whatever it did."""
        proc = self._proc
        if proc is not None and proc.returncode is None and self._ranks:
            with contextlib.suppress(Exception):
                self._send_all({"cmd": "stop"})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE)
        await self._stop()
        self.pump_logs()

    def stop_now(self) -> None:
        """Close the control channel and stop the whole group (SIGTERM, grace, SIGKILL); loop thread only."""
        self._close_channel()
        self._stop_group()

    async def _stop(self) -> None:
        """stop_now without blocking the loop during the group's grace period."""
        self._close_channel()
        await asyncio.to_thread(self._stop_group)

    def _close_channel(self) -> None:
        for w in self._ranks.values():
            with contextlib.suppress(Exception):
                w.close()
        self._ranks = {}
        if self._server is not None:
            self._server.close()
            self._server = None

    def _stop_group(self) -> None:
        """torchrun's group first (it stops its ranks itself on SIGTERM), then any rank group still alive."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if procs.group_alive(proc.pid):
                procs.stop_group(proc.pid, grace=STOP_GRACE)
            self.emit(Proc(t=time.time(), run=self.cfg.label, role="trainer", pid=proc.pid, pgid=proc.pid,
                           action="exit", returncode=proc.returncode if proc.returncode is not None else -9))
        groups, self._rank_groups, self._rank_pids = self._rank_groups, [], {}
        for pgid in groups:
            if procs.group_alive(pgid):
                procs.stop_group(pgid, grace=STOP_GRACE)
            self.emit(Proc(t=time.time(), run=self.cfg.label, role="trainer", pid=pgid, pgid=pgid, action="exit"))


_ADVICE = {
    "CHECKPOINT": "the model directory, the initial adapter or the saved trainer state (<workdir>/train/state) "
                  "do not fit the run's config (LoRA rank/alpha/targets, TP): fix the config or remove the state",
    "OOM": "the trainer ran out of memory: lower --train-micro-batch or the sequence lengths, or make sure "
           "the engine really freed its memory at offload",
    "NCCL": "NCCL failed between trainer ranks: check the training GPUs (CUDA_VISIBLE_DEVICES) and NCCL_DEBUG=INFO",
    "TRAINER": "a trainer rank failed or died (killed, e.g. by the OOM killer, or crashed): see the rank's log",
    "CONFIG": "this model's config is not supported by the megatron trainer",
    "IMPORT_ERROR": "the trainer interpreter lacks a package: re-run `sgtui setup --cpu` or fix --trainer-python",
}


def _progress_text(step: int, msg: dict) -> str:
    if msg.get("stage") == "loaded":
        text = (f"step {step}: model and batch loaded in {msg.get('seconds', 0):.1f}s "
                f"({msg.get('samples')} samples, {msg.get('trainable')} trainable params, from {msg.get('origin')})")
        if msg.get("learning") == 0:
            text += ("; every GRPO group has equal rewards, so every advantage is 0 and this step "
                     "cannot change the adapter (the workload's reward gives no signal)")
        return text
    if msg.get("stage") == "update":
        return (f"step {step}: update {msg.get('i')}/{msg.get('of')} loss {msg.get('loss', 0):.6g} "
                f"grad norm {msg.get('grad_norm', 0):.4g}")
    return f"step {step}: {msg}"
