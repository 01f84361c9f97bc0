"""The real SGLang server (`python -m sglang.launch_server`) as an RL inference engine.

Strategies map onto SGLang's own endpoints:
- `release`: /release_memory_occupation, then /resume_memory_occupation
  (`--enable-memory-saver`). SGLang *asserts* that nothing is in flight when
  releasing, and a failed assertion kills the whole server, so offload first
  waits until its scheduler is fully idle (sglang_idle.py). Released weights are
  discarded, not backed up (unless `--enable-weights-cpu-backup` is among the
  extra flags), so on a GPU the reload puts them back from disk. From 0.5 on,
  the calls carry tags and the resume is staged as RL frameworks do it:
  weights first, weights reloaded, then the KV cache (lower peak while the
  trainer's memory is still being returned). Resuming what was not released
  also kills the server, so the engine tracks what it released.
  On CPU the memory saver is CUDA-only: the calls answer 200 and free nothing.
- `restart` and `keep` are the base engine's (base.py).
Weight sync: `lora` unloads the previous adapter and loads the new one
(/unload_lora_adapter, /load_lora_adapter) under a new name per step;
`restart` restarts the server with `--lora-paths`. `/flush_cache` optional.
Full weights (sgtui/runner/weights.py drives them): `disk` calls
/update_weights_from_disk with the checkpoint the trainer just wrote (25 ms
for the tiny model on CPU); `ipc` sends each bucket of handles to
/update_weights_from_tensor (`load_format: flattened_bucket`, the cache
flushed with the last), inside /begin_weight_update .. /end_weight_update
where the server has them (0.5.23 refuses the update outside that session;
0.5.17 has no such routes and loads without). On CPU the handles name
shared-memory files (sgtui/runner/trainer/ipc_wire.py): the same route, the
same loader. With a full sync the release strategy's resume does not put the
base weights back from disk on a GPU: the sync brings the weights.

Engine gauges: /metrics during rollouts; the KV-cache capacity before each
rollout (`capacity`): /server_info (/get_server_info where it is missing; 0.5.23
deprecates that one) asks the scheduler for its live
`memory_usage.token_capacity` (max_total_num_tokens); 16384 tokens on the tiny
CPU model, the same after release + resume.

Adapters are addressed as "BASE:NAME"; a bare "NAME" (or any unknown bare
name) is silently served by the base model, so the engine always asks for
"BASE:NAME", and the runner's adapter check (`served_model_matches` and a
greedy completion that must differ from the base model's) proves that the
adapter is what answers.

Failures are categorized with SGLang's own rules first (sgtui/runner/errors.py:
the TP memory imbalance check, OOM at resume, release while busy); a server
whose HTTP front end outlives its scheduler (/health 503) is a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import httpx

from sgtui.runner.engines.base import Engine, EngineError, Wake, parse_prometheus, parse_version
from sgtui.runner.engines.sglang_idle import IdleGuard
from sgtui.runner.errors import categorize_sglang, recategorize_sglang

#: CPU-only compatibility layer (see sgtui/runner/cpu_compat/README.md); never used with a GPU. Runner code (it runs
#: inside the SGLang server and imports torch there), inside the package so an installed sgtui finds it too (the
#: runner sees the package through a symlink: resolve() follows it).
CPU_COMPAT = Path(__file__).resolve().parents[1] / "cpu_compat"
#: CPU serving flags (FACTS.md): torch-native attention; without --max-total-tokens the KV pool takes 17 GB;
#: float32 makes greedy output equal HF transformers' token for token.
CPU_FLAGS = ["--device", "cpu", "--attention-backend", "torch_native", "--disable-overlap-schedule",
             "--max-total-tokens", "16384", "--dtype", "float32"]
_GAUGES = {
    "sglang:token_usage": "kv_usage",
    "sglang:num_running_reqs": "running",
    "sglang:num_queue_reqs": "waiting",
    "sglang:cache_hit_rate": "prefix_hit_rate",
    "sglang:gen_throughput": "gen_throughput",
}
#: Release/resume tags (sglang.srt.constants); sent from 0.5 on, where all three exist.
TAGS_SINCE = (0, 5, 0)
WEIGHTS, KV_CACHE, CUDA_GRAPH = "weights", "kv_cache", "cuda_graph"
CPU_NOTE = " (cpu: memory saver is CUDA-only, nothing freed)"


# -- the engine ---------------------------------------------------------------------------------
class SglangEngine(Engine):
    backend = "sglang"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loaded: str = ""  # adapter name currently loaded
        self.released: list[str] | None = None  # what the last release let go of (None: nothing released)
        self.server_version = ""
        # asks the scheduler how busy it is; waits for it to be fully idle
        self.idle = IdleGuard(self.client, self.cfg, self.tail, self.scrape, lambda: self.check_crashed(timeout=5.0))
        self.weights_backed_up = "--enable-weights-cpu-backup" in self.cfg.extra_args
        self._info_path = "/server_info"
        self._session: bool | None = None  # /begin_weight_update exists (None: not asked yet)
        self._buckets = 0

    # -- command line ------------------------------------------------------------------------------
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
            argv += CPU_FLAGS
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

    # -- adapters --------------------------------------------------------------------------------
    def request_model(self) -> str:
        return f"{self.cfg.served_model_name}:{self.loaded}" if self.loaded else self.cfg.served_model_name

    def served_model_matches(self, asked: str, answered: str) -> bool:
        """SGLang echoes what was asked; a bare adapter name would be served by the base model silently."""
        return answered in (asked, asked.split(":", 1)[-1]) and (":" in asked or not self.loaded)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self, adapter_dir: str | None = None) -> str:
        self.released = None
        self.loaded = ""
        try:
            detail = await super().start(adapter_dir)
            await self._health_generate()
        except EngineError as e:
            raise self._recategorize(e) from None
        self.loaded = self._name(self.starts) if adapter_dir else ""
        self.server_version = await self.version()
        return detail

    async def detach(self) -> None:
        """An external server: its memory back (a run cancelled mid-step may have released it), without this
        run's adapter."""
        if self.released is not None:
            with contextlib.suppress(EngineError):
                await self._resume(None)
            self.released = None
        if self.loaded:
            with contextlib.suppress(EngineError):
                await self.control("/unload_lora_adapter", json={"lora_name": self.loaded})
            self.loaded = ""

    async def _health_generate(self) -> None:
        """/health_generate runs one real token through the scheduler: /health alone may answer without it."""
        try:
            r = await self.client.get("/health_generate", timeout=self.cfg.server_timeout)
        except httpx.TimeoutException:
            raise EngineError("SERVER_TIMEOUT", f"sglang /health_generate did not answer within "
                              f"{self.cfg.server_timeout:.0f} s", self.tail(),
                              "raise --server-timeout, or look at the server log") from None
        except httpx.HTTPError as e:
            self.check_alive()
            raise EngineError("SERVER_CRASH", f"sglang /health_generate failed: {type(e).__name__}: {e}",
                              self.tail()) from None
        if r.status_code != 200:
            raise EngineError("SERVER_CRASH", f"sglang /health_generate answered {r.status_code}: the scheduler "
                              "does not answer", self.tail())

    async def version(self) -> str:
        try:
            return str((await self._server_info() or {}).get("version", ""))
        except Exception:  # noqa: BLE001 - informative only
            return ""

    def check_alive(self) -> None:
        try:
            super().check_alive()
        except EngineError as e:
            raise self._recategorize(e) from None

    async def check_crashed(self, timeout: float = 30.0) -> None:
        """Raise SERVER_CRASH unless the server is alive *and* its scheduler answers.

        When SGLang's scheduler dies or hangs, its HTTP server can stay up and answer /health with 503
        for minutes (or not answer: /health runs a generation and waits for the scheduler). Both are a
        crash; the teardown that follows (SIGTERM, grace, SIGKILL) takes the group down.
        """
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            self.check_alive()
            try:
                r = await self.client.get("/health", timeout=min(5.0, timeout))
                if r.status_code == 200:
                    return
                last = f"/health answered {r.status_code}"
                if r.status_code == 503:
                    break
            except httpx.HTTPError as e:
                last = f"/health: {type(e).__name__}"
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # a dying server: let the group exit and the log flush
        self.check_alive()
        tail = self.tail()
        cat, advice = categorize_sglang(tail, "SERVER_CRASH", self.server_version)
        if cat in ("OTHER", "IMPORT_ERROR"):
            cat = "SERVER_CRASH"
        raise EngineError(cat, f"sglang server process is up but its scheduler does not answer ({last})", tail,
                          advice or "the scheduler died or hangs; the server is torn down (SIGTERM, then SIGKILL)")

    def _recategorize(self, e: EngineError) -> EngineError:
        """The base class categorized with the shared patterns; SGLang's own rules (sgtui/runner/errors.py)
        decide again from the message and the log."""
        cat, advice = recategorize_sglang(e.category, e.advice, "\n".join([e.message] + e.log_tail),
                                          self.server_version)
        return e if (cat, advice) == (e.category, e.advice) else EngineError(cat, e.message, e.log_tail, advice)

    async def control(self, path: str, json: dict | None = None, timeout: float | None = None) -> httpx.Response:
        """POST a control endpoint; a failure is categorized from SGLang's log once the group has settled."""
        try:
            return await self.post(path, json=json, timeout=timeout)
        except EngineError as e:
            if e.category == "SERVER_CRASH":  # the connection broke: the server may be on its way down
                await self._settle()
                e = EngineError(e.category, e.message, self.tail(), e.advice)
            raise self._recategorize(e) from None

    async def _settle(self, seconds: float = 3.0) -> None:
        """A scheduler that exits takes the server down a moment after the HTTP call failed: wait for it."""
        deadline = time.monotonic() + seconds
        while self.child is not None and self.child.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    # -- strategies --------------------------------------------------------------------------------
    def _tags(self) -> list[str] | None:
        v = parse_version(self.server_version)
        return [KV_CACHE, WEIGHTS, CUDA_GRAPH] if v and v >= TAGS_SINCE else None

    async def release(self) -> str:
        if self.released is not None:
            return "already released"
        waited = await self.idle.wait()
        tags = self._tags()
        await self.control("/release_memory_occupation", json={"tags": tags} if tags else {})
        self.released = tags or [KV_CACHE, WEIGHTS, CUDA_GRAPH]
        what = "weights, kv_cache, cuda_graph" if tags else "all"
        return (f"release_memory_occupation ({what}) after {waited * 1000:.0f} ms idle wait"
                + ("" if self.on_gpu else CPU_NOTE))

    def nothing_released(self) -> str:
        return "nothing released" if self.released is None else ""

    def staged_wake(self) -> bool:
        return self._tags() is not None

    def weights_discarded(self) -> bool:
        # Released weights are discarded, not backed up (RL frameworks push new weights after resume):
        # serving again needs them reloaded, as vLLM's sleep level 2 does. On CPU nothing was discarded.
        return self.on_gpu and not self.weights_backed_up

    async def wake(self, what: Wake) -> str:
        t = time.perf_counter()
        if what == "all":
            await self._resume(None)
            return f"resume_memory_occupation {_ms(t)}"
        if what == "weights":
            await self._resume([WEIGHTS])
            return f"resume weights {_ms(t)}"
        await self._resume([KV_CACHE, CUDA_GRAPH])
        return f"resume kv_cache+cuda_graph {_ms(t)}"

    async def reload_base_weights(self) -> str:
        t = time.perf_counter()
        await self._update_from_disk(self.cfg.model)
        return f"update_weights_from_disk (base weights) {_ms(t)}"

    async def woken(self, parts: list[str]) -> str:
        self.released = None
        if self.full and self.weights_discarded():
            parts.append("weights come with the sync")
        return ", ".join(parts) + ("" if self.on_gpu else CPU_NOTE)

    async def _resume(self, tags: list[str] | None) -> None:
        await self.control("/resume_memory_occupation", json={"tags": tags} if tags else {})
        if tags and self.released is not None:
            self.released = [t for t in self.released if t not in tags]

    async def _update_from_disk(self, path: str) -> None:
        r = await self.control("/update_weights_from_disk", json={"model_path": path},
                               timeout=self.cfg.startup_timeout)
        try:
            ok = r.json().get("success", True)
        except ValueError:
            ok = True
        if not ok:
            raise EngineError("OTHER", f"sglang update_weights_from_disk {path}: {r.text[:300]}", self.tail())

    async def hot_sync(self, adapter_dir: str, step: int) -> str:
        parts = []
        if self.loaded:
            await self.control("/unload_lora_adapter", json={"lora_name": self.loaded})
            parts.append(f"unload {self.loaded}")
            self.loaded = ""
        name = f"policy-s{step}"
        await self.control("/load_lora_adapter", json={"lora_name": name, "lora_path": adapter_dir})
        self.loaded = name
        parts.append(f"load {name}")
        detail = ", ".join(parts)
        if self.cfg.flush_cache:
            await self.control("/flush_cache")
            detail += ", flush_cache"
        return detail

    # -- full-weight sync ----------------------------------------------------------------------------
    def push_format(self) -> str:
        return "sglang" if self.cfg.sync == "ipc" else super().push_format()

    async def begin_full_sync(self) -> None:
        self._buckets = 0
        if self._session is False:
            return
        try:
            r = await self.client.post("/begin_weight_update", json={}, timeout=self.cfg.server_timeout)
        except httpx.HTTPError:
            r = await self.control("/begin_weight_update", json={})  # the same call, categorized
        if r.status_code == 404:
            self._session = False  # before 0.5.2x: updates load without a session
            return
        await self._ok("/begin_weight_update", r)
        self._session = True

    async def load_bucket(self, msg: dict) -> None:
        payloads = msg.get("payloads") or []
        if len(payloads) != self.cfg.tp:
            raise EngineError("CONFIG", f"sglang --tp-size {self.cfg.tp} needs one IPC payload per rank, the trainer "
                              f"sent {len(payloads)}", advice="run the trainer with as many ranks as the engine "
                              "(--train-tp 0) on the same GPUs (shared placement)")
        r = await self.control("/update_weights_from_tensor", timeout=self.cfg.startup_timeout, json={
            "serialized_named_tensors": payloads, "load_format": "flattened_bucket",
            "flush_cache": bool(msg.get("last")), "abort_all_requests": False})
        await self._ok("/update_weights_from_tensor", r)
        self._buckets += 1

    async def end_full_sync(self) -> None:
        if self._session:
            await self._ok("/end_weight_update", await self.control("/end_weight_update", json={}))

    async def load_checkpoint(self, path: str) -> None:
        self.check_checkpoint(path)
        # a serving engine's reload flushes the cache, which SGLang refuses (400, "requests are still running")
        # until the scheduler is fully idle: a batch lingers a loop iteration after the last request (seen in
        # CI on a loaded box). The base-weight re-read at resume needs no wait: a released engine serves nothing.
        await self.idle.wait()
        await self._update_from_disk(path)
        self._buckets = 0

    async def after_full_sync(self) -> str:
        if self.cfg.sync == "ipc":
            session = "begin/end_weight_update, " if self._session else ""
            return f"{session}update_weights_from_tensor x{self._buckets} (flattened_bucket), cache flushed"
        return "update_weights_from_disk (cache flushed)"

    async def _ok(self, path: str, r: httpx.Response) -> None:
        """SGLang answers some refusals with 200 and success=false, others with 400: both are failures."""
        if r.status_code == 200:
            try:
                ok = r.json().get("success", True)
            except ValueError:
                ok = True
            if ok:
                return
        raise EngineError("WEIGHT_SYNC", f"sglang {path} answered {r.status_code}: {r.text[:300]}", self.tail())

    async def scrape(self) -> dict[str, float]:
        """Engine gauges from /metrics (`--enable-metrics`), under the names the vLLM engine uses."""
        r = await self.client.get("/metrics", timeout=5.0)
        raw = parse_prometheus(r.text, set(_GAUGES))
        return {short: raw[name] for name, short in _GAUGES.items() if name in raw}

    async def capacity(self) -> dict[str, float]:
        """`kv_capacity_tokens` from the server info, {} when the server does not say."""
        doc = await self._server_info()
        return capacity_from_server_info(doc) if doc is not None else {}

    async def _server_info(self) -> dict | None:
        """The server info document: /server_info, or /get_server_info where that is missing (0.5.23
        deprecates the latter); None when neither answers."""
        for path in dict.fromkeys((self._info_path, "/get_server_info")):
            r = await self.client.get(path, timeout=5.0)
            if r.status_code == 200:
                self._info_path = path
                return r.json()
        return None


def capacity_from_server_info(doc) -> dict[str, float]:
    """SGLang's KV pool in tokens: the schedulers' live `memory_usage.token_capacity` summed over the data
    parallel ranks (`internal_states`, 0.5.2x), else the `max_total_num_tokens` the server started with."""
    if not isinstance(doc, dict):
        return {}
    live = [mu["token_capacity"] for st in doc.get("internal_states") or () if isinstance(st, dict)
            and isinstance(mu := st.get("memory_usage"), dict) and type(mu.get("token_capacity")) in (int, float)]
    if live:
        return {"kv_capacity_tokens": float(sum(live))}
    top = doc.get("max_total_num_tokens")
    return {"kv_capacity_tokens": float(top)} if type(top) in (int, float) else {}


def _ms(t0: float) -> str:
    return f"{(time.perf_counter() - t0) * 1000:.0f} ms"
