"""The real SGLang server (`python -m sglang.launch_server`) as an RL inference engine.

Strategies map onto SGLang's own endpoints:
- `release`: /release_memory_occupation, then /resume_memory_occupation
  (`--enable-memory-saver`; weights and KV cache, by tags where supported).
  SGLang asserts that nothing is in flight when releasing, so offload first
  waits until the server itself reports no running or queued request.
  On CPU the memory saver is CUDA-only: the calls answer and free nothing.
- `restart`: offload stops the process group, reload starts it again
  (with the new adapter preloaded when the sync is `restart`).
- `keep`: the engine stays resident (split placement).
Weight sync: `lora` unloads the previous adapter and loads the new one
(/unload_lora_adapter, /load_lora_adapter) under a new name per step;
`disk` calls /update_weights_from_disk with a merged checkpoint;
`restart` restarts the server with `--lora-paths`. `flush_cache` optional.

Adapters are addressed as "BASE:NAME"; a bare "NAME" silently serves the
base model, so the engine always asks for "BASE:NAME" and the runner checks
what answered.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from sgtui.runner.engines.base import Engine, EngineError, parse_prometheus

#: CPU-only compatibility layer (see setup/cpu_compat/README.md); never used with a GPU.
CPU_COMPAT = Path(__file__).resolve().parents[3] / "setup" / "cpu_compat"
_GAUGES = {
    "sglang:token_usage": "kv_usage",
    "sglang:num_running_reqs": "running",
    "sglang:num_queue_reqs": "waiting",
    "sglang:cache_hit_rate": "prefix_hit_rate",
    "sglang:gen_throughput": "gen_throughput",
}


class SglangEngine(Engine):
    backend = "sglang"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_gpu = self.cfg.device == "cuda"
        self.lora = self.cfg.sync in ("lora", "restart")
        self.loaded: str = ""  # adapter name currently loaded

    def server_argv(self, adapter_dir: str | None = None) -> list[str]:
        c = self.cfg
        argv = [
            c.python or sys.executable, "-m", "sglang.launch_server",
            "--model-path", c.model,
            "--served-model-name", c.served_model_name,
            "--host", c.host,
            "--port", str(c.port),
            "--tp-size", str(c.tp),
            "--context-length", str(c.effective_max_model_len()),
            "--enable-metrics",
            "--random-seed", str(c.seed),
        ]
        if self.on_gpu:
            argv += ["--mem-fraction-static", str(c.gpu_memory_utilization)]
            if c.strategy == "release":
                argv.append("--enable-memory-saver")
            if c.dtype != "auto":
                argv += ["--dtype", c.dtype]
        else:
            argv += ["--device", "cpu", "--attention-backend", "torch_native", "--disable-overlap-schedule",
                     "--max-total-tokens", "16384", "--dtype", "float32"]
        if c.disable_radix_cache:
            argv.append("--disable-radix-cache")
        if self.lora:
            argv += ["--enable-lora", "--max-loras-per-batch", "2", "--max-lora-rank", str(max(8, c.lora_rank)),
                     "--lora-target-modules", *c.lora_targets]
            if not self.on_gpu:
                argv += ["--lora-backend", "torch_native"]
            if adapter_dir:
                argv += ["--lora-paths", f"{self._name(self.starts + 1)}={adapter_dir}"]
        return argv + list(c.extra_args)

    def server_env(self) -> dict[str, str]:
        env = {"HF_HUB_OFFLINE": "1", "SGLANG_CACHE_DIR": str(self.workdir.parent / "sglang-cache")}
        if not self.on_gpu:
            env["SGLANG_USE_CPU_ENGINE"] = "1"
            extra = os.environ.get("PYTHONPATH", "")
            env["PYTHONPATH"] = str(CPU_COMPAT) + (os.pathsep + extra if extra else "")
        return env

    def _name(self, n: int) -> str:
        return f"policy-{n}"

    def request_model(self) -> str:
        return f"{self.cfg.served_model_name}:{self.loaded}" if self.loaded else self.cfg.served_model_name

    def served_model_matches(self, asked: str, answered: str) -> bool:
        """SGLang echoes what was asked; a bare adapter name would be served by the base model silently."""
        return answered in (asked, asked.split(":", 1)[-1]) and (":" in asked or not self.loaded)

    async def start(self, adapter_dir: str | None = None) -> str:
        detail = await super().start(adapter_dir)
        await self._health_generate()
        self.loaded = self._name(self.starts) if adapter_dir else ""
        return detail

    async def _health_generate(self) -> None:
        try:
            r = await self.client.get("/health_generate", timeout=self.cfg.server_timeout)
        except Exception as e:  # noqa: BLE001
            raise EngineError("SERVER_TIMEOUT", f"sglang /health_generate failed: {e}", self.tail()) from None
        if r.status_code != 200:
            raise EngineError("SERVER_CRASH", f"sglang /health_generate answered {r.status_code}", self.tail())

    async def version(self) -> str:
        try:
            r = await self.client.get("/get_server_info", timeout=5.0)
            return str(r.json().get("version", ""))
        except Exception:  # noqa: BLE001 - informative only
            return ""

    async def wait_idle(self, timeout: float | None = None) -> float:
        """Wait until the server reports no running or queued request (release asserts on that)."""
        deadline = time.monotonic() + (timeout or self.cfg.server_timeout)
        t0 = time.monotonic()
        while True:
            g = await self.scrape()
            if g.get("running", 0) == 0 and g.get("waiting", 0) == 0:
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise EngineError("SERVER_TIMEOUT", f"sglang still has requests in flight after "
                                  f"{timeout or self.cfg.server_timeout:.0f} s; cannot release memory", self.tail())
            await asyncio.sleep(0.05)

    async def offload(self) -> str:
        s = self.cfg.strategy
        if s == "keep":
            return "keep: engine stays resident"
        if s == "restart":
            await self.stop()
            return "server stopped (process group)"
        waited = await self.wait_idle()
        await self.post("/release_memory_occupation", json={})
        note = "" if self.on_gpu else " (cpu: memory saver is CUDA-only, nothing freed)"
        return f"release_memory_occupation after {waited * 1000:.0f} ms idle wait{note}"

    async def reload(self, adapter_dir: str | None) -> str:
        s = self.cfg.strategy
        if s == "keep":
            return "keep: nothing to reload"
        if s == "restart":
            restart_with = adapter_dir if self.cfg.sync == "restart" else None
            detail = await self.start(restart_with)
            return detail + (" with new adapter" if restart_with else "")
        await self.post("/resume_memory_occupation", json={})
        if not self.on_gpu:
            return "resume_memory_occupation"
        # Released weights are discarded, not backed up (RL frameworks push new weights after resume):
        # serving again needs them reloaded, as vLLM's sleep level 2 does.
        await self.post("/update_weights_from_disk", json={"model_path": self.cfg.model},
                        timeout=self.cfg.startup_timeout)
        return "resume_memory_occupation + update_weights_from_disk (base weights)"

    async def sync_weights(self, adapter_dir: str, step: int) -> str:
        sync = self.cfg.sync
        if sync == "none":
            return "none"
        if sync == "restart":
            if self.cfg.strategy == "restart":
                return "included in reload (server restarted with the new adapter)"
            await self.stop()
            await self.start(adapter_dir)
            return "server restarted with the new adapter"
        if sync == "disk":
            if not (Path(adapter_dir) / "config.json").is_file():
                raise EngineError("CONFIG", f"disk sync needs a merged checkpoint; {adapter_dir} has no config.json",
                                  advice="use --run sglang:STRATEGY+lora with adapter-producing trainers")
            await self.post("/update_weights_from_disk", json={"model_path": adapter_dir},
                            timeout=self.cfg.startup_timeout)
            detail = "update_weights_from_disk"
        else:
            parts = []
            if self.loaded:
                await self.post("/unload_lora_adapter", json={"lora_name": self.loaded})
                parts.append(f"unload {self.loaded}")
            name = f"policy-s{step}"
            await self.post("/load_lora_adapter", json={"lora_name": name, "lora_path": adapter_dir})
            self.loaded = name
            parts.append(f"load {name}")
            detail = ", ".join(parts)
        if self.cfg.flush_cache:
            await self.post("/flush_cache")
            detail += ", flush_cache"
        return detail

    async def scrape(self) -> dict[str, float]:
        r = await self.client.get("/metrics", timeout=5.0)
        raw = parse_prometheus(r.text, set(_GAUGES))
        return {short: raw[name] for name, short in _GAUGES.items() if name in raw}
