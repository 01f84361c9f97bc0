"""The megatron-core trainer, runner side: one torchrun launch per RL step, in its own process group.

Per step it writes the rollouts to `<workdir>/train/step-N/batch.jsonl` and a
`job.json`, then runs

    TRAINER_PYTHON -m torch.distributed.run --nproc_per_node TP --master_addr 127.0.0.1
        --master_port <free> -m sgtui.runner.trainer --job .../job.json

(gloo on CPU, NCCL on the training GPUs via CUDA_VISIBLE_DEVICES). The ranks
answer with JSON lines on stdout (progress, result, error); their logs
(`rank<N>.log`, `torchrun.log`) are forwarded as `log` events while the step
runs. LoRA shards and optimizer state live in `<workdir>/train/state`, so step
N+1 continues from step N; the PEFT adapter of step N is written to
`<workdir>/adapters/step-N` and returned for the weight sync.

No torch import here: the runner may live in a venv without megatron-core
(the CPU trainer has its own venv, made by setup/trainer_cpu.sh).
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

import orjson

from sgtui.config import cuda_env
from sgtui.events import Log, Train
from sgtui.runner import errors, procs
from sgtui.runner.trainer.base import Rollout, Trainer, TrainerError

#: Where setup/trainer_cpu.sh puts the CPU trainer venv (name keyed by versions).
CPU_VENV_GLOB = "trainer-cpu-mcore*"
REPO_ROOT = Path(__file__).resolve().parents[3]
STOP_GRACE = 5.0


def default_trainer_python(device: str) -> str:
    """The CPU trainer venv made by setup/trainer_cpu.sh; on GPU the runner's own interpreter."""
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


def train_parts(seconds: float, result: dict) -> dict[str, float]:
    """Where a step's train time went: the ranks time their load, update and export; the rest of the runner's
    wall time is the launch (torchrun, interpreter and megatron imports, process group setup), which a
    one-launch-per-step trainer pays every step."""
    ph = result.get("phases", {})
    load, update, export = (float(ph.get(k, 0.0)) for k in ("load", "train", "save_export"))
    return {"launch": max(0.0, seconds - float(result.get("seconds", load + update + export))),
            "load": load, "update": update, "export": export}


class MegatronTrainer(Trainer):
    def __init__(self, cfg, emit, workdir: Path, job_extra: dict | None = None) -> None:
        super().__init__(cfg, emit, workdir)
        self.train_dir = Path(workdir) / "train"
        self.state_dir = self.train_dir / "state"
        self.job_extra = dict(job_extra or {})  # tests: inner_steps, dump_logits, verify_frozen
        self._proc: asyncio.subprocess.Process | None = None
        self._followers: dict[Path, procs.LogFollower] = {}
        self.last_result: dict = {}

    # -- launch -----------------------------------------------------------------------------------
    def python(self) -> str:
        py = self.cfg.trainer_python or default_trainer_python(self.cfg.device)
        if not py or not Path(py).exists():
            raise TrainerError("IMPORT_ERROR", f"no trainer interpreter ({py or 'none found'})",
                               advice="run `bash setup/trainer_cpu.sh` (CPU) or pass --trainer-python with an "
                                      "interpreter that has torch, megatron-core, transformers and safetensors")
        return py

    def _job(self, step: int, step_dir: Path) -> dict:
        cfg = self.cfg
        job = {
            "model": cfg.model, "batch": str(step_dir / "batch.jsonl"), "state_dir": str(self.state_dir),
            "out_adapter": str(Path(self.workdir) / "adapters" / f"step-{step}"), "step": step,
            "lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha, "lora_targets": list(cfg.lora_targets),
            "learning_rate": cfg.learning_rate, "kl_coef": cfg.kl_coef, "init_adapter": cfg.initial_adapter,
            "device": cfg.device, "dtype": cfg.dtype, "micro_batch": cfg.train_micro_batch,
            "max_len": cfg.effective_max_model_len(), "seed": cfg.seed,
        }
        job.update(self.job_extra)
        return job

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        env[procs.MARKER_RUN] = self.cfg.label
        env[procs.MARKER_OWNER] = str(os.getpid())
        if self.cfg.device == "cuda":
            env.update(cuda_env(self.cfg.train_gpus or self.cfg.gpus))
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    async def train(self, step: int, rollouts: list[Rollout]) -> str:
        if not rollouts:
            raise TrainerError("OTHER", f"step {step}: no successful rollouts to train on")
        if not self.cfg.model:
            raise TrainerError("MODEL_PATH", "the megatron trainer needs --model (a local HF directory)")
        t0 = time.perf_counter()
        step_dir = self.train_dir / f"step-{step}"
        step_dir.mkdir(parents=True, exist_ok=True)
        for old in step_dir.glob("*.log"):
            old.unlink()
        (step_dir / "batch.jsonl").write_bytes(b"".join(
            orjson.dumps({"prompt": r.prompt, "completion": r.completion, "group": r.group, "reward": r.reward})
            + b"\n" for r in rollouts))
        job_path = step_dir / "job.json"
        job_path.write_bytes(orjson.dumps(self._job(step, step_dir), option=orjson.OPT_INDENT_2))
        nproc = max(1, self.cfg.tp)
        argv = [self.python(), "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
                "--master_addr", "127.0.0.1", "--master_port", str(procs.free_port()),
                "-m", "sgtui.runner.trainer", "--job", str(job_path)]
        self._followers = {}
        result, failure = await self._launch(argv, step_dir, step)
        seconds = time.perf_counter() - t0
        if failure is not None or result is None:
            raise self._error(step_dir, failure)
        self.last_result = result
        (step_dir / "result.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        self._log(f"step {step}: loss {result['loss']:.6g}, {result['tokens']} completion tokens, "
                  f"{result['tokens_per_s']:.1f} tok/s, phases {result['phases']}, peak MiB {result['peak_mib']}, "
                  f"from {result['origin']}")
        rewards = [r.reward for r in rollouts]
        self.emit(Train(t=time.time(), run=self.cfg.label, step=step, loss=float(result["loss"]),
                        tokens=int(result["tokens"]), seconds=seconds, adapter_path=result["adapter"],
                        peak_mib=list(result["peak_mib"]), reward_mean=sum(rewards) / len(rewards), simulated=False,
                        parts=train_parts(seconds, result)))
        return result["adapter"]

    async def _launch(self, argv: list[str], step_dir: Path, step: int) -> tuple[dict | None, dict | None]:
        """Run torchrun to its end; (result line, first error line). Cancelling stops the process group."""
        log = open(step_dir / "torchrun.log", "ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=log,
                env=self._env(), cwd=str(step_dir), start_new_session=True, limit=1 << 22)
        except OSError as e:
            log.close()
            raise TrainerError("IMPORT_ERROR", f"cannot start the trainer: {e}") from None
        log.close()
        result = failure = None
        try:
            assert self._proc.stdout is not None
            while True:
                try:
                    line = await asyncio.wait_for(self._proc.stdout.readline(), timeout=0.5)
                except asyncio.TimeoutError:
                    self.pump_logs(step_dir)
                    continue
                if not line:
                    break
                msg = self._parse(line)
                if msg is None:
                    continue
                kind = msg.get("event")
                if kind == "result":
                    result = msg
                elif kind == "error" and failure is None:
                    failure = msg
                elif kind == "progress":
                    self._log(_progress_text(step, msg))
                self.pump_logs(step_dir)
            rc = await self._proc.wait()
            if rc != 0 and failure is None:
                failure = {"event": "exit", "code": rc}
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self.stop_now))
            raise
        finally:
            self.pump_logs(step_dir)
        self.stop_now()  # ranks torchrun left behind (it normally reaps them) go with the group
        return result, failure

    def _parse(self, line: bytes) -> dict | None:
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._log(text)
            return None
        return msg

    # -- logs and errors --------------------------------------------------------------------------
    def _log(self, line: str) -> None:
        self.emit(Log(t=time.time(), run=self.cfg.label, source="trainer", line=line))

    def pump_logs(self, step_dir: Path) -> None:
        """Forward new lines of torchrun.log and every rank<N>.log as `log` events (rank-prefixed)."""
        for path in [step_dir / "torchrun.log", *sorted(step_dir.glob("rank*.log"))]:
            f = self._followers.get(path)
            if f is None:
                if not path.exists():
                    continue
                f = self._followers[path] = procs.LogFollower(path)
            prefix = f"[{path.stem}] "
            for line in f.read_new():
                if line.strip():
                    self._log(prefix + line)

    def _error(self, step_dir: Path, failure: dict | None) -> TrainerError:
        torchrun_tail = procs.log_tail(step_dir / "torchrun.log", 60)
        if failure is not None and failure.get("event") == "error":
            rank = int(failure.get("rank", 0))
            tail = procs.log_tail(step_dir / f"rank{rank}.log", 40)
            category = failure.get("category", "OTHER")
            advice = _ADVICE.get(category) or errors.categorize(tail)[1]
            return TrainerError(category, f"trainer rank {rank}: {failure.get('message', '')}"[:1000], tail, advice)
        dead = rank_failure(torchrun_tail)
        if dead is not None:
            rank, code = dead
            tail = procs.log_tail(step_dir / f"rank{rank}.log", 30) + torchrun_tail[-20:]
            category, advice = errors.categorize(tail, default="RANK_DIED")
            if category == "IMPORT_ERROR" or category == "OTHER":
                category, advice = "RANK_DIED", _ADVICE["RANK_DIED"]
            return TrainerError(category, f"trainer rank {rank} died: {describe_exit(code)}", tail, advice)
        tail = torchrun_tail[-40:]
        code = failure.get("code") if failure else 0
        category, advice = errors.categorize(tail)
        what = describe_exit(code) if code else "no result line"
        return TrainerError(category, f"the trainer ended without a result ({what})", tail, advice)

    # -- teardown ---------------------------------------------------------------------------------
    def stop_now(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if procs.group_alive(proc.pid):
            procs.stop_group(proc.pid, grace=STOP_GRACE)
        self._proc = None if proc.returncode is not None else proc


_ADVICE = {
    "CHECKPOINT": "the model directory, the initial adapter or the saved trainer state (<workdir>/train/state) "
                  "do not fit the run's config (LoRA rank/alpha/targets, TP): fix the config or remove the state",
    "OOM": "the trainer ran out of memory: lower --train-micro-batch or the sequence lengths, or make sure "
           "the engine really freed its memory at offload",
    "NCCL": "NCCL failed between trainer ranks: check the training GPUs (CUDA_VISIBLE_DEVICES) and NCCL_DEBUG=INFO",
    "RANK_DIED": "a trainer rank died without a Python error (killed, e.g. by the OOM killer, or crashed): "
                 "see the rank's log",
    "CONFIG": "this model's config is not supported by the megatron trainer",
    "IMPORT_ERROR": "the trainer interpreter lacks a package: re-run setup/trainer_cpu.sh or fix --trainer-python",
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
