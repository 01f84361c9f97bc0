"""The real SGLang server (`python -m sglang.launch_server`) as an RL inference engine.

Strategies map onto SGLang's own endpoints:
- `release`: /release_memory_occupation, then /resume_memory_occupation
  (`--enable-memory-saver`). SGLang *asserts* that nothing is in flight when
  releasing, and a failed assertion kills the whole server, so offload first
  waits until the server itself (its scheduler, via /v1/loads) reports no
  running or queued request: our own client being done is not enough (a
  request the client gave up on can still run there); then until its
  /flush_cache succeeds, which the scheduler does only when fully idle (its
  last batch lingers a moment after the last request: `wait_idle`). Released weights are
  discarded, not backed up (unless `--enable-weights-cpu-backup` is among the
  extra flags), so on a GPU the reload puts them back from disk. From 0.5 on,
  the calls carry tags and the resume is staged as RL frameworks do it:
  weights first, weights reloaded, then the KV cache (lower peak while the
  trainer's memory is still being returned). Resuming what was not released
  also kills the server, so the engine tracks what it released.
  On CPU the memory saver is CUDA-only: the calls answer 200 and free nothing.
- `restart`: offload stops the process group, reload starts it again
  (with the new adapter preloaded when the sync is `restart`).
- `keep`: the engine stays resident (split placement).
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
"BASE:NAME" and `verify_adapter` proves that the adapter is what answers.

Known failure modes are turned into categorized errors with advice that is
right for SGLang (`categorize_sglang`): the TP memory imbalance check, OOM at
resume (torch_memory_saver's own message), release while busy, and a server
whose HTTP front end outlives its scheduler (/health 503: a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from sgtui.runner.engines.base import Engine, EngineError, parse_prometheus
from sgtui.runner.errors import categorize

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
ADAPTER_ADVICE = ('SGLang selects an adapter with "model": "BASE:NAME"; a bare "NAME" (or an unknown name) is '
                  "answered by the base model without an error")


def parse_version(text: str) -> tuple[int, ...]:
    """'0.5.17' -> (0, 5, 17); '0.4.6.post1' -> (0, 4, 6); '' -> ()."""
    out = []
    for part in text.strip().split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.end() != len(part):
            break
    return tuple(out)


# -- log text ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    category: str
    regex: re.Pattern[str]
    advice: str


def _tp_advice(version: str) -> str:
    """The switch was renamed in 0.5: since then the old `SGL_DISABLE_...=1` is mapped onto the new
    `SGLANG_ENABLE_...` name *with the same value*, which leaves the check on."""
    v = parse_version(version)
    if v and v < (0, 5):
        switch = "SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK=1"
    else:
        switch = ("SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK=0 (SGLang < 0.5: SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK=1; "
                  "from 0.5 that old name keeps the check on)")
    return ("free memory differs across the TP ranks' GPUs (another process on some of them): free those GPUs, "
            f"or skip the check with the engine env {switch}")


_RULES = [
    _Rule("SERVER_CRASH", re.compile(r"release_memory_occupation should be called only when server is idle"),
          "memory was released while a request was still running: the server asserts on that and exits"),
    _Rule("OOM", re.compile(r"torch_memory_saver.*(OUT_OF_MEMORY|out of memory)", re.IGNORECASE),
          "resuming SGLang's memory failed: the trainer (or another process) still holds GPU memory when the "
          "engine resumes; free it first, or lower --gpu-memory-utilization (SGLang's --mem-fraction-static)"),
    _Rule("OOM", re.compile(r"Not enough memory\. Please try to increase --mem-fraction-static"),
          "the KV cache got no memory: raise --gpu-memory-utilization (SGLang's --mem-fraction-static), "
          "or free the GPU"),
    _Rule("SERVER_CRASH", re.compile(r"Cannot resume allocation that is not paused|KeyError: '(weights|kv_cache|cuda_graph)'"),
          "memory was resumed that had not been released; the server exits on that"),
]


#: SGLang logs these at every start (optional model files that need CUDA-only modules); they are not the
#: import error that broke a start, so the shared IMPORT_ERROR pattern must not see them.
_BENIGN = re.compile(r"Ignore import error when loading|has no attribute '\w+_cpu'")


def categorize_sglang(lines: list[str] | str, default: str = "OTHER", version: str = "") -> tuple[str, str]:
    """(category, advice): SGLang's own failure texts first, then the shared patterns (sgtui.runner.errors)."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    for rule in _RULES:
        if rule.regex.search(text):
            return rule.category, rule.advice
    text = "\n".join(line for line in text.splitlines() if not _BENIGN.search(line))
    cat, advice = categorize(text, default)
    if cat == "TP_IMBALANCE":
        advice = _tp_advice(version)
    return cat, advice


# -- the engine ---------------------------------------------------------------------------------
class SglangEngine(Engine):
    backend = "sglang"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_gpu = self.cfg.device == "cuda"
        # `none` still serves the initial adapter (the policy the trainer starts from); it only never syncs
        self.lora = self.cfg.sync in ("lora", "restart") or (self.cfg.sync == "none" and bool(self.cfg.initial_adapter))
        self.loaded: str = ""  # adapter name currently loaded
        self.released: list[str] | None = None  # what the last release let go of (None: nothing released)
        self.server_version = ""
        self._load_path: str | None = None  # /v1/loads, /get_load or "" (metrics only); None: not probed yet
        self.weights_backed_up = "--enable-weights-cpu-backup" in self.cfg.extra_args
        self._info_path = "/server_info"
        self.full = self.cfg.sync in ("disk", "ipc")  # full-weight sync: the trainer brings every weight
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

    def check_request_model(self, model: str) -> None:
        """Refuse a model string that SGLang would silently serve with the base model."""
        if self.loaded and model != self.request_model():
            raise EngineError("CONFIG", f"requests ask for model {model!r}, but the loaded adapter is "
                              f"{self.request_model()!r}", advice=ADAPTER_ADVICE)

    async def _greedy(self, model: str, prompt: str, max_tokens: int) -> tuple[str, str]:
        """(served model, text) of one greedy, non-streamed completion."""
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
        try:
            r = await self.client.post("/v1/completions", json=body, timeout=self.cfg.request_timeout)
        except httpx.HTTPError as e:
            await self.check_crashed()
            raise EngineError("REQUEST", f"sglang completion with model {model!r}: {type(e).__name__}: {e}",
                              self.tail()) from None
        if r.status_code != 200:
            raise EngineError("CONFIG" if model != self.cfg.served_model_name else "REQUEST",
                              f"sglang completion with model {model!r} answered {r.status_code}: {r.text[:300]}",
                              self.tail(), ADAPTER_ADVICE if ":" in model else "")
        j = r.json()
        return str(j.get("model") or ""), "".join(c.get("text") or "" for c in j.get("choices") or ())

    async def verify_adapter(self, prompt: str, max_tokens: int = 8) -> str:
        """Prove that the loaded adapter is what answers `request_model()`, outside any timed phase.

        Two checks: the model name SGLang reports back, and a greedy completion that must differ from
        the base model's (SGLang serves a bare or unknown name with the base model, silently). An adapter
        that really equals the base model (a PEFT init with zero B matrices) fails the second check too:
        it cannot be told apart, so sgtui's test adapters are never zero.
        """
        if not self.loaded:
            return "no adapter loaded"
        want = self.request_model()
        self.check_request_model(want)
        got, text = await self._greedy(want, prompt, max_tokens)
        if not self.served_model_matches(want, got):
            raise EngineError("CONFIG", f"asked for adapter {want!r} but {got!r} answered", self.tail(),
                              ADAPTER_ADVICE)
        _, base_text = await self._greedy(self.cfg.served_model_name, prompt, max_tokens)
        if text == base_text:
            raise EngineError("CONFIG", f"adapter {want!r} answers exactly like the base model: the adapter is "
                              "not applied (wrong adapter name?)", self.tail(), ADAPTER_ADVICE)
        return f"{want} differs from the base model"

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
            r = await self.client.get("/get_server_info", timeout=5.0)
            return str(r.json().get("version", ""))
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
        """The base class categorized with the shared patterns; SGLang's own texts (and advice) come first,
        and its benign start-up import notes must not make a crash look like an IMPORT_ERROR."""
        if e.category in ("PORT_IN_USE", "SERVER_TIMEOUT", "CONFIG"):
            return e
        text = "\n".join([e.message] + e.log_tail)
        for rule in _RULES:  # SGLang's own failure texts: their advice replaces the generic one
            if rule.regex.search(text):
                return EngineError(rule.category, e.message, e.log_tail, rule.advice)
        default = "SERVER_CRASH" if e.category == "IMPORT_ERROR" else e.category
        cat, advice = categorize_sglang(text, default, self.server_version)
        if cat == e.category and cat != "TP_IMBALANCE" and (e.advice or not advice):
            return e
        return EngineError(cat, e.message, e.log_tail, advice)

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

    # -- the idle guard ------------------------------------------------------------------------------
    async def server_load(self) -> tuple[float, float]:
        """(running, waiting) requests as the scheduler itself sees them right now.

        /v1/loads (0.5.x; /get_load before) asks the scheduler; the `sglang:` gauges of /metrics are only
        refreshed at its logging intervals (seen: 1 running in /metrics while /v1/loads said 16), so
        they are the last resort, for servers that have neither.
        """
        if self._load_path is None:
            self._load_path = ""
            for path in ("/v1/loads", "/get_load"):
                r = await self.client.get(path, params={"include": "core"} if path == "/v1/loads" else None,
                                          timeout=self.cfg.server_timeout)
                if r.status_code == 200:
                    self._load_path = path
                    return _loads(r.json())
        if self._load_path:
            params = {"include": "core"} if self._load_path == "/v1/loads" else None
            r = await self.client.get(self._load_path, params=params, timeout=self.cfg.server_timeout)
            if r.status_code == 200:
                return _loads(r.json())
            raise EngineError("SERVER_CRASH", f"sglang {self._load_path} answered {r.status_code}", self.tail())
        g = await self.scrape()
        return g.get("running", 0.0), g.get("waiting", 0.0)

    async def wait_idle(self, timeout: float | None = None) -> float:
        """Wait until the scheduler is fully idle; returns the seconds waited.

        No running or queued request (/v1/loads) is not enough: the release asserts the scheduler's
        `is_fully_idle`, which also wants its last batch gone, and that batch lingers for a loop iteration
        after the last request ended (seen in CI on a loaded box: the assertion killed the server). The
        scheduler's /flush_cache runs only when `is_fully_idle` holds, clears that batch itself, and
        answers 400 otherwise: its 200 is the go-ahead (what it drops, the prefix cache, the release drops
        anyway)."""
        limit = timeout or self.cfg.server_timeout
        deadline = time.monotonic() + limit
        t0 = time.monotonic()
        while True:
            try:
                running, waiting = await self.server_load()
                if running == 0 and waiting == 0:
                    r = await self.client.post("/flush_cache", timeout=self.cfg.server_timeout)
                    if r.status_code == 200:
                        return time.monotonic() - t0
                    if r.status_code != 400:
                        raise EngineError("SERVER_CRASH", f"sglang /flush_cache answered {r.status_code}: "
                                          f"{r.text[:200]}", self.tail())
            except httpx.HTTPError as e:
                await self.check_crashed(timeout=5.0)
                raise EngineError("SERVER_CRASH", f"sglang load query failed: {type(e).__name__}: {e}",
                                  self.tail()) from None
            if time.monotonic() > deadline:
                busy = (f"still has {running:.0f} running and {waiting:.0f} queued requests" if running or waiting
                        else "reports no request, but its scheduler is not fully idle (/flush_cache refused)")
                raise EngineError("SERVER_TIMEOUT", f"sglang {busy} after {limit:.0f} s; memory cannot be released "
                                  "while it works", self.tail(), "raise --server-timeout, or lower --max-output-tokens")
            await asyncio.sleep(0.02)

    # -- strategies --------------------------------------------------------------------------------
    def _tags(self) -> list[str] | None:
        v = parse_version(self.server_version)
        return [KV_CACHE, WEIGHTS, CUDA_GRAPH] if v and v >= TAGS_SINCE else None

    async def offload(self) -> str:
        s = self.cfg.strategy
        if s == "keep":
            return "keep: engine stays resident"
        if s == "restart":
            await self.stop()
            return "server stopped (process group)"
        if self.released is not None:
            return "already released"
        waited = await self.wait_idle()
        tags = self._tags()
        await self.control("/release_memory_occupation", json={"tags": tags} if tags else {})
        self.released = tags or [KV_CACHE, WEIGHTS, CUDA_GRAPH]
        what = "weights, kv_cache, cuda_graph" if tags else "all"
        return (f"release_memory_occupation ({what}) after {waited * 1000:.0f} ms idle wait"
                + ("" if self.on_gpu else CPU_NOTE))

    async def reload(self, adapter_dir: str | None) -> str:
        s = self.cfg.strategy
        if s == "keep":
            return "keep: nothing to reload"
        if s == "restart":
            restart_with = adapter_dir if self.cfg.sync == "restart" else None
            detail = await self.start(restart_with)
            return detail + (" with new adapter" if restart_with else "")
        if self.released is None:
            return "nothing released"
        tagged = self._tags() is not None
        # Released weights are discarded, not backed up (RL frameworks push new weights after resume):
        # serving again needs them reloaded, as vLLM's sleep level 2 does. On CPU nothing was discarded.
        reload_weights = self.on_gpu and not self.weights_backed_up and not self.full
        parts = []
        t = time.perf_counter()
        if tagged:
            await self._resume([WEIGHTS])
            parts.append(f"resume weights {_ms(t)}")
            if reload_weights:
                t = time.perf_counter()
                await self._update_from_disk(self.cfg.model)
                parts.append(f"update_weights_from_disk (base weights) {_ms(t)}")
            t = time.perf_counter()
            await self._resume([KV_CACHE, CUDA_GRAPH])
            parts.append(f"resume kv_cache+cuda_graph {_ms(t)}")
        else:
            await self._resume(None)
            parts.append(f"resume_memory_occupation {_ms(t)}")
            if reload_weights:
                t = time.perf_counter()
                await self._update_from_disk(self.cfg.model)
                parts.append(f"update_weights_from_disk (base weights) {_ms(t)}")
        self.released = None
        if self.full and self.on_gpu and not self.weights_backed_up:
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
        await self.wait_idle()
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
        for path in dict.fromkeys((self._info_path, "/get_server_info")):
            r = await self.client.get(path, timeout=5.0)
            if r.status_code == 200:
                self._info_path = path
                return capacity_from_server_info(r.json())
        return {}


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


def _loads(doc) -> tuple[float, float]:
    """Sum running/waiting over DP ranks from /v1/loads ({"loads": [...]}) or the older /get_load (a list)."""
    ranks = doc.get("loads", []) if isinstance(doc, dict) else doc
    running = waiting = 0.0
    for d in ranks or ():
        w = float(d.get("num_waiting_reqs", 0) or 0)
        if "num_running_reqs" in d:
            r = float(d.get("num_running_reqs") or 0)
        else:  # /get_load: num_reqs counts running and waiting together
            r = max(0.0, float(d.get("num_reqs", 0) or 0) - w)
        running += r
        waiting += w
    return running, waiting


def _ms(t0: float) -> str:
    return f"{(time.perf_counter() - t0) * 1000:.0f} ms"
