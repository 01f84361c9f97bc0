"""The real vLLM OpenAI server as an RL inference engine.

Strategies map onto vLLM's own endpoints (dev mode, `VLLM_SERVER_DEV_MODE=1`):
- `sleep1`: POST /sleep?level=1 (weights offloaded to CPU, KV cache freed),
  POST /wake_up. On CPU, `--enable-sleep-mode` is refused, so dev mode alone
  pauses scheduling and frees nothing: the phase detail says so.
- `sleep2`: /sleep?level=2 discards the weights too, so the reload must put
  them back: /wake_up?tags=weights, /collective_rpc reload_weights (from
  disk), /wake_up?tags=kv_cache.
- `restart`: offload stops the process group, reload starts it again.
- `keep`: nothing; the engine stays resident (split placement).
Weight sync: `lora` hot-loads the step's adapter with /v1/load_lora_adapter
(`load_inplace` after the first load); `restart` starts the server with
`--lora-modules` pointing at the new adapter (its cost lands in `reload`).
"""

from __future__ import annotations

import os
import sys

from sgtui.runner.engines.base import Engine, EngineError, parse_prometheus

ADAPTER_NAME = "policy-lora"
_GAUGES = {
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
}
_COUNTERS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")
_SLEEP = ("vllm:engine_sleep_state",)


class VllmEngine(Engine):
    backend = "vllm"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_gpu = self.cfg.device == "cuda"
        # Adapters exist to sync whenever the run syncs weights (the trainer writes one per step).
        self.lora = self.cfg.sync in ("lora", "restart")
        self.lora_loaded = False

    def server_argv(self, adapter_dir: str | None = None) -> list[str]:
        c = self.cfg
        argv = [
            c.python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", c.model,
            "--served-model-name", c.served_model_name,
            "--host", c.host,
            "--port", str(c.port),
            "--tensor-parallel-size", str(c.tp),
            "--max-model-len", str(c.effective_max_model_len()),
            "--dtype", c.dtype if c.dtype != "auto" or self.on_gpu else "float32",
            "--seed", str(c.seed),
        ]
        if self.on_gpu:
            argv += ["--gpu-memory-utilization", str(c.gpu_memory_utilization)]
            if c.strategy in ("sleep1", "sleep2"):
                argv.append("--enable-sleep-mode")
        else:
            argv.append("--enforce-eager")
        if self.lora:
            argv += ["--enable-lora", "--max-lora-rank", str(max(8, c.lora_rank)), "--max-loras", "2"]
            if adapter_dir:
                argv += ["--lora-modules", f"{ADAPTER_NAME}={adapter_dir}"]
        return argv + list(c.extra_args)

    def server_env(self) -> dict[str, str]:
        env = {
            "VLLM_SERVER_DEV_MODE": "1",  # /sleep, /wake_up, /collective_rpc; never expose beyond 127.0.0.1
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_NO_USAGE_STATS": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_CACHE_ROOT": str(self.workdir.parent / "vllm-cache"),
        }
        if not self.on_gpu:
            env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, integers only
        return env

    async def start(self, adapter_dir: str | None = None) -> str:
        detail = await super().start(adapter_dir)
        if adapter_dir:
            self.adapter_name, self.lora_loaded = ADAPTER_NAME, True
        return detail

    async def version(self) -> str:
        try:
            r = await self.client.get("/version", timeout=5.0)
            return str(r.json().get("version", ""))
        except Exception:  # noqa: BLE001 - version is informative only
            return ""

    async def offload(self) -> str:
        s = self.cfg.strategy
        if s == "keep":
            return "keep: engine stays resident"
        if s == "restart":
            await self.stop()
            return "server stopped (process group)"
        level = 2 if s == "sleep2" else 1
        await self.post("/sleep", params={"level": level})
        await self._expect_sleeping(True)
        return f"sleep level {level}" + ("" if self.on_gpu else " (cpu: dev-mode pause only, no memory freed)")

    async def reload(self, adapter_dir: str | None) -> str:
        s = self.cfg.strategy
        if s == "keep":
            return "keep: nothing to reload"
        if s == "restart":
            restart_with = adapter_dir if self.cfg.sync == "restart" else None
            detail = await self.start(restart_with)
            if not restart_with:
                self.lora_loaded, self.adapter_name = False, ""
            return detail + (" with new adapter" if restart_with else "")
        if s == "sleep2":
            await self.post("/wake_up", params={"tags": "weights"})
            await self.post("/collective_rpc", json={"method": "reload_weights"}, timeout=self.cfg.startup_timeout)
            await self.post("/wake_up", params={"tags": "kv_cache"})
            await self._expect_sleeping(False)
            return "wake_up weights + reload_weights from disk + wake_up kv_cache"
        await self.post("/wake_up")
        await self._expect_sleeping(False)
        return "wake_up"

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
        body = {"lora_name": ADAPTER_NAME, "lora_path": adapter_dir}
        if self.lora_loaded:
            body["load_inplace"] = True
        await self.post("/v1/load_lora_adapter", json=body)
        self.lora_loaded, self.adapter_name = True, ADAPTER_NAME
        return f"load_lora_adapter {ADAPTER_NAME}" + (" (in place)" if body.get("load_inplace") else "")

    async def _expect_sleeping(self, want: bool) -> None:
        r = await self.client.get("/is_sleeping", timeout=self.cfg.server_timeout)
        got = bool(r.json().get("is_sleeping"))
        if got != want:
            raise EngineError("OTHER", f"vllm /is_sleeping is {got} after {'sleep' if want else 'wake_up'}", self.tail())

    async def scrape(self) -> dict[str, float]:
        r = await self.client.get("/metrics", timeout=5.0)
        raw = parse_prometheus(r.text, set(_GAUGES) | set(_COUNTERS) | set(_SLEEP))
        out = {short: raw[name] for name, short in _GAUGES.items() if name in raw}
        rate = self.counter_rate("prefix", raw.get(_COUNTERS[0]), raw.get(_COUNTERS[1]))
        if rate is not None:
            out["prefix_hit_rate"] = rate
        return out
