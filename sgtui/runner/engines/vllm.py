"""The real vLLM OpenAI server as an RL inference engine.

Strategies map onto vLLM's own endpoints (dev mode, `VLLM_SERVER_DEV_MODE=1`):
- `sleep1`: POST /sleep?level=1 (weights offloaded to CPU, KV cache freed),
  POST /wake_up. On CPU, `--enable-sleep-mode` is refused, so dev mode alone
  pauses scheduling and frees nothing: the phase detail says so.
- `sleep2`: /sleep?level=2 discards the weights too, so the reload must put
  them back: /wake_up?tags=weights, /collective_rpc reload_weights (from
  disk), /wake_up?tags=kv_cache.
- `restart` and `keep` are the base engine's (base.py): the server stopped and
  started again; nothing (the engine stays resident, split placement).
Weight sync: `lora` hot-loads the step's adapter: /v1/unload_lora_adapter of
the previous one, then /v1/load_lora_adapter, never `load_inplace`. vLLM keeps
the request it stored for an in-place load with `load_inplace` set, and its
worker reloads an adapter whose request says so whenever it activates it (in
0.32: serving.py stores the LoRARequest as given, worker_manager.add_adapter
reloads when `load_inplace` is true), i.e. from disk at every scheduler step.
Measured on the real CPU server: 64 tokens took 0.8-1.6 s after an in-place
load against 0.3-0.4 s after unload + load, and deleting the adapter's files
then crashed the engine core (500); the H100 session of 2026-11-23 showed the
same as 2.7x the ITL of a freshly loaded adapter. An in-place sync would
measure that bug rather than the engine. `restart` starts the server with
`--lora-modules` pointing at the new adapter (its cost lands in `reload`).
Engine gauges: /metrics during rollouts (KV usage, running/waiting, prefix hit
rate over the scrape interval, sleep state). The KV-cache capacity before each
rollout (`capacity`): the `num_gpu_blocks` and `block_size` labels of
`vllm:cache_config_info`; vLLM sets them when its engine starts, so a restart's
new profile shows there: 4096 blocks of 128 tokens on the tiny CPU model, the
same after /sleep and /wake_up, which on CPU only pause.
The sleep2 order is the one vLLM's own snapshot server uses to restore a
level-2 sleep (vllm/snapshot/server.py, `_restore_reloadable_state`, 0.32).
Full weights (sgtui/runner/weights.py drives them), as vLLM's RL users do:
`disk` asks every worker to reload from the trainer's checkpoint,
POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path":
DIR}} (gpu_model_runner.reload_weights; 0.26 and 0.32 alike; 31 ms for the
tiny model on CPU, greedy output then equal to the merged checkpoint served
fresh). A reload from a directory without weights leaves the model on meta
tensors and the next request kills the engine core (0.32, measured), so the
directory is checked first. `ipc` is vLLM's weight-transfer API with its IPC
backend (`--weight-transfer-config '{"backend":"ipc"}'`, dev mode,
`VLLM_ALLOW_INSECURE_SERIALIZATION=1` for pickled handles over HTTP):
/init_weight_transfer_engine once (the set-up, timed apart), then per sync
/start_weight_update, /update_weights per packed bucket, /finish_weight_update
(vllm/entrypoints/serve/dev/rlhf/api_router.py in 0.26; `packed` moved from
each update into the init info after 0.26). Its receiver rebuilds CUDA
tensors: no `ipc` on CPU (preflight refuses it). After either, the prefix
cache holds KV computed with the old weights: /reset_prefix_cache. With a
full sync, sleep2's reload wakes the weights' memory without reading the base
weights from disk: the sync brings them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time

from sgtui.runner.engines.base import Engine, EngineError, Wake, parse_prometheus, parse_version

ADAPTER_NAME = "policy-lora"
_GAUGES = {
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
}
_COUNTERS = ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")
_SLEEP = "vllm:engine_sleep_state{"
_CACHE_INFO = "vllm:cache_config_info{"
_LABEL = re.compile(r'(\w+)="([^"]*)"')
#: vLLM's `sleep_state` label values (v1/metrics/loggers.py: record_sleep_state) -> the sleep level they mean.
_SLEEP_LEVELS = {"weights_offloaded": 1.0, "discard_all": 2.0}
#: vLLM versions from which the IPC backend takes `packed` in its init info instead of in every update (0.26:
#: per update; 0.32: at init). Versions between were not checked.
IPC_PACKED_AT_INIT = (0, 27)
#: `--max-lora-rank` accepts only these (vllm/config/lora.py MaxLoRARanks); any other value fails startup.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_flag(rank: int) -> int:
    """The smallest rank vLLM accepts that holds the adapter's rank."""
    return next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1])


def sleep_gauges(text: str) -> dict[str, float]:
    """`sleeping` (0/1) and `sleep_level` (0, 1, 2) from vLLM's labelled engine_sleep_state gauge.

    vLLM sets awake=1 when awake; when asleep, awake=0 and weights_offloaded=1 (level 1) or
    discard_all=1 (level 2); a level-0 pause (scheduling only) leaves both at 0.
    """
    seen: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(_SLEEP):
            continue
        i = line.find('sleep_state="')
        if i < 0:
            continue
        state = line[i + 13: line.find('"', i + 13)]
        try:
            seen[state] = max(seen.get(state, 0.0), float(line[line.rfind(" ") + 1:]))
        except ValueError:
            continue
    if "awake" not in seen:
        return {}
    level = max((lvl for state, lvl in _SLEEP_LEVELS.items() if seen.get(state, 0.0) >= 1.0), default=0.0)
    return {"sleeping": 0.0 if seen["awake"] >= 1.0 else 1.0, "sleep_level": level}


def cache_capacity(text: str) -> dict[str, float]:
    """`kv_blocks` (num_gpu_blocks) and `kv_capacity_tokens` (blocks x block_size: the KV pool in tokens, as
    SGLang's max_total_num_tokens counts it), summed over engines (data parallel), from the labels of
    vLLM's `vllm:cache_config_info`; {} when the gauge or its labels are absent."""
    blocks = tokens = 0
    seen = False
    for line in text.splitlines():
        if not line.startswith(_CACHE_INFO):
            continue
        labels = dict(_LABEL.findall(line, len(_CACHE_INFO), line.rfind("}")))
        try:
            n, size = int(labels["num_gpu_blocks"]), int(labels["block_size"])
        except (KeyError, ValueError):  # "None" before the engine profiled its memory
            continue
        blocks, tokens, seen = blocks + n, tokens + n * size, True
    return {"kv_blocks": float(blocks), "kv_capacity_tokens": float(tokens)} if seen else {}


class VllmEngine(Engine):
    backend = "vllm"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lora_loaded = False
        self.transfer_ready = False  # /init_weight_transfer_engine done on this server instance
        self.server_version = ""  # asked at the first full sync's set-up
        self._buckets = 0

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
            argv += ["--enable-lora", "--max-lora-rank", str(lora_rank_flag(c.lora_rank)), "--max-loras", "2"]
            if adapter_dir:
                argv += ["--lora-modules", f"{ADAPTER_NAME}={adapter_dir}"]
        if c.sync == "ipc":
            argv += ["--weight-transfer-config", '{"backend": "ipc"}']
        return argv + list(c.extra_args)

    def server_env(self) -> dict[str, str]:
        env = {
            "VLLM_SERVER_DEV_MODE": "1",  # /sleep, /wake_up, /collective_rpc; never expose beyond 127.0.0.1
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_NO_USAGE_STATS": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_CACHE_ROOT": str(self.workdir.parent / "vllm-cache"),
        }
        if self.cfg.sync == "ipc":
            env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # the IPC handles come pickled over HTTP
        if not self.on_gpu:
            env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, integers only
        return env

    async def start(self, adapter_dir: str | None = None) -> str:
        self.transfer_ready = False
        detail = await super().start(adapter_dir)
        # a fresh server serves the adapter it was started with, and no other
        self.adapter_name, self.lora_loaded = (ADAPTER_NAME, True) if adapter_dir else ("", False)
        return detail

    async def detach(self) -> None:
        """An external server: awake (a run cancelled mid-step may have left it asleep), without this run's
        adapter."""
        with contextlib.suppress(Exception):
            r = await self.client.get("/is_sleeping", timeout=5.0)
            if r.status_code == 200 and r.json().get("is_sleeping"):
                await self.post("/wake_up")
        if self.lora_loaded:
            with contextlib.suppress(EngineError):
                await self.post("/v1/unload_lora_adapter", json={"lora_name": ADAPTER_NAME})
            self.lora_loaded, self.adapter_name = False, ""

    async def version(self) -> str:
        try:
            r = await self.client.get("/version", timeout=5.0)
            return str(r.json().get("version", ""))
        except Exception:  # noqa: BLE001 - version is informative only
            return ""

    # -- in-place offload: sleep and wake up ----------------------------------------------------------------
    async def release(self) -> str:
        level = 2 if self.cfg.strategy == "sleep2" else 1
        await self.post("/sleep", params={"level": level})
        await self._expect_sleeping(True)
        return f"sleep level {level}" + ("" if self.on_gpu else " (cpu: dev-mode pause only, no memory freed)")

    def staged_wake(self) -> bool:
        return self.cfg.strategy == "sleep2"

    def weights_discarded(self) -> bool:
        return self.cfg.strategy == "sleep2"  # level 2 discards the weights (on CPU too: the reload runs)

    async def wake(self, what: Wake) -> str:
        if what == "all":
            await self.post("/wake_up")
            return "wake_up"
        tag = "weights" if what == "weights" else "kv_cache"
        await self.post("/wake_up", params={"tags": tag})
        return f"wake_up {tag}"

    async def reload_base_weights(self) -> str:
        await self.post("/collective_rpc", json={"method": "reload_weights"}, timeout=self.cfg.startup_timeout)
        return "reload_weights from disk"

    async def woken(self, parts: list[str]) -> str:
        await self._expect_sleeping(False)
        return " + ".join(parts) + (" (the sync brings the weights)" if self.full and self.weights_discarded() else "")

    async def hot_sync(self, adapter_dir: str, step: int) -> str:
        """Unload, then load (see the module docstring for why not `load_inplace`)."""
        detail = f"load_lora_adapter {ADAPTER_NAME}"
        if self.lora_loaded:
            await self.post("/v1/unload_lora_adapter", json={"lora_name": ADAPTER_NAME})
            self.lora_loaded = False  # until the load below succeeds
            detail = "unload + " + detail
        await self.post("/v1/load_lora_adapter", json={"lora_name": ADAPTER_NAME, "lora_path": adapter_dir})
        self.lora_loaded, self.adapter_name = True, ADAPTER_NAME
        return detail

    # -- full-weight sync ----------------------------------------------------------------------------
    def push_format(self) -> str:
        return "vllm" if self.cfg.sync == "ipc" else super().push_format()

    def _packed_at_init(self, version: str) -> bool:
        v = parse_version(version)
        return bool(v) and v >= IPC_PACKED_AT_INIT

    async def full_sync_setup(self) -> float | None:
        if self.cfg.sync != "ipc" or self.transfer_ready:
            return None
        t = time.perf_counter()
        self.server_version = await self.version()
        init = {"packed": True} if self._packed_at_init(self.server_version) else {}
        await self.post("/init_weight_transfer_engine", json={"init_info": init})
        self.transfer_ready = True
        return time.perf_counter() - t

    async def begin_full_sync(self) -> None:
        self._buckets = 0
        await self.post("/start_weight_update", timeout=self.cfg.startup_timeout)

    async def load_bucket(self, msg: dict) -> None:
        update = dict(msg["update"])
        if not self._packed_at_init(self.server_version):
            update["packed"] = True
        await self.post("/update_weights", json={"update_info": update}, timeout=self.cfg.startup_timeout)
        self._buckets += 1

    async def end_full_sync(self) -> None:
        await self.post("/finish_weight_update", timeout=self.cfg.startup_timeout)

    async def load_checkpoint(self, path: str) -> None:
        self.check_checkpoint(path)
        await self.post("/collective_rpc", json={"method": "reload_weights", "kwargs": {"weights_path": path}},
                        timeout=self.cfg.startup_timeout)
        self._buckets = 0

    async def after_full_sync(self) -> str:
        await self.post("/reset_prefix_cache")
        if self.cfg.sync == "ipc":
            return f"start_weight_update, update_weights x{self._buckets} (packed IPC), finish_weight_update, " \
                   "reset_prefix_cache"
        return "collective_rpc reload_weights(weights_path), reset_prefix_cache"

    async def _expect_sleeping(self, want: bool) -> None:
        r = await self.client.get("/is_sleeping", timeout=self.cfg.server_timeout)
        got = bool(r.json().get("is_sleeping"))
        if got != want:
            raise EngineError("OTHER", f"vllm /is_sleeping is {got} after {'sleep' if want else 'wake_up'}", self.tail())

    async def scrape(self) -> dict[str, float]:
        r = await self.client.get("/metrics", timeout=5.0)
        raw = parse_prometheus(r.text, set(_GAUGES) | set(_COUNTERS))
        out = {short: raw[name] for name, short in _GAUGES.items() if name in raw}
        rate = self.counter_rate("prefix", raw.get(_COUNTERS[0]), raw.get(_COUNTERS[1]))
        if rate is not None:
            out["prefix_hit_rate"] = rate
        out.update(sleep_gauges(r.text))
        return out

    async def capacity(self) -> dict[str, float]:
        r = await self.client.get("/metrics", timeout=5.0)
        return cache_capacity(r.text)
