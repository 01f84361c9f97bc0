"""What every engine backend does for the step loop, and the parts they share.

The runner drives an `Engine` through startup, offload/reload (the strategy)
and weight sync. The runner times each call as a phase, so an engine method
must do exactly the work of its phase and nothing else (e.g. a restart
strategy stops the server in `offload` and starts it in `reload`).

The sequence of a step's transitions is written once, here: `keep` does
nothing, `restart` stops the server and starts it again (with the new adapter
when the sync is `restart`), an in-place offload (vLLM sleep, SGLang release)
is undone in stages (`wake_up`), and the weight sync is `none`, a restart, a
hot adapter load or a full-weight update. Each backend defines only its own
transitions, as HTTP calls on its endpoints: `release`, `wake`,
`reload_base_weights`, `woken`, `hot_sync` and the full-weight calls.

Full-weight syncs (`+disk`, `+ipc`) are driven by sgtui/runner/weights.py
through the engine's `push_format`, `full_sync_setup`, `begin_full_sync`,
`load_bucket`, `end_full_sync`, `load_checkpoint` and `after_full_sync`;
an engine that lacks one refuses it with a CONFIG error (preflight refuses
the run first).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Literal

import httpx

from sgtui import external
from sgtui.childproc import port_free
from sgtui.config import FULL_SYNCS, RunConfig, cuda_env
from sgtui.errors import categorize, failure
from sgtui.events import Event, Log, Proc
from sgtui.runner import procs

#: Log lines read to find a failed server's root cause (the user sees the last 40, the cause line first).
LOG_SCAN = 400
#: What one `wake` call brings back: the weights' memory, the rest (KV cache, CUDA graphs), or all at once.
Wake = Literal["weights", "rest", "all"]


def parse_version(text: str) -> tuple[int, ...]:
    """'0.5.17' -> (0, 5, 17); '0.4.6.post1' -> (0, 4, 6); '' -> (). What an engine version decides (request
    fields, endpoints, the advice for a failure) is compared on these."""
    out = []
    for part in text.strip().split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.end() != len(part):
            break
    return tuple(out)


class EngineError(Exception):
    """A categorized engine failure; becomes an `error` event and ends the run as failed."""

    def __init__(self, category: str, message: str, log_tail: list[str] | None = None, advice: str = "") -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.log_tail = log_tail or []
        self.advice = advice


#: CUDA-graph capture as the servers log it at startup (vLLM 0.2x-0.3x: gpu_model_runner.py; SGLang 0.5.23:
#: cuda_graph_setup.py, one line per captured graph kind; SGLang before that: one "Capture cuda graph end").
_GRAPH_CAPTURE = (
    re.compile(r"Graph capturing finished in (?P<s>[\d.]+) secs?, took (?P<gb>[\d.]+) GiB"),
    re.compile(r"Capture (?P<what>[\w ]*?graph) end\. .*?elapsed=(?P<s>[\d.]+) s, mem usage=(?P<gb>[\d.]+) GB"),
    re.compile(r"Capture (?P<what>cuda graph) end\. Time elapsed: (?P<s>[\d.]+) s\. mem usage=(?P<gb>[\d.]+) GB"),
)


def graph_capture_note(line: str) -> str:
    """"" or a short note of a CUDA-graph capture the server logged (e.g. "CUDA graphs captured in 12 s, 0.52
    GiB"): the startup phase's detail says whether (and at what cost) graphs were captured, which decides
    decode speed, without anyone reading the log."""
    for rx in _GRAPH_CAPTURE:
        m = rx.search(line)
        if m:
            what = m.groupdict().get("what") or "CUDA graphs"
            unit = "GiB" if rx is _GRAPH_CAPTURE[0] else "GB"
            return f"{what} captured in {float(m['s']):.3g} s, {m['gb']} {unit}"
    return ""


def parse_prometheus(text: str, wanted: set[str]) -> dict[str, float]:
    """Sum samples of the wanted metric names over their label sets (cheap: no full parser)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.rfind(" ")
        name = line[:brace] if 0 < brace < space else line[:space]
        if name in wanted:
            try:
                out[name] = out.get(name, 0.0) + float(line[space + 1:])
            except ValueError:
                continue
    return out


class Engine(ABC):
    backend: str = ""

    def __init__(self, cfg: RunConfig, emit: Callable[[Event], None], workdir: Path) -> None:
        self.cfg = cfg
        self.emit = emit
        self.workdir = workdir
        self.child: procs.Child | None = None
        self.log_path = workdir / f"{self.backend}-server.log"
        #: A server someone else started (--vllm-url/--sglang-url): attached to and measured, never started,
        #: restarted or stopped here (`start` attaches, `stop` detaches). sgtui/external.py asks what it allows.
        self.external = bool(cfg.external_url)
        self.server: "external.Server | None" = None  # what the external server said at attach
        self.base_url = cfg.external_url.rstrip("/") if self.external else f"http://{cfg.host}:{cfg.port}"
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=cfg.server_timeout)
        self.starts = 0
        #: The server's full command line as last started (empty before the first start); `server_argv()`
        #: gives the same list before a start. The run records it (run_start / the startup phase).
        self.argv: list[str] = []
        self.graph_notes: list[str] = []  # CUDA-graph captures logged during the current start
        self._starting = False
        self.adapter_name = ""  # set once an adapter is loaded; requests then ask for it
        self._follower: procs.LogFollower | None = None
        self._counters: dict[str, float] = {}
        self.on_gpu = cfg.device == "cuda"
        # Adapters exist to sync whenever the run syncs weights (the trainer writes one per step).
        # `none` still serves the initial adapter (the policy the trainer starts from); it only never syncs
        self.lora = cfg.sync in ("lora", "restart") or (cfg.sync == "none" and bool(cfg.initial_adapter))
        self.full = cfg.sync in FULL_SYNCS  # full-weight sync: the trainer brings every weight

    # -- what a backend defines ---------------------------------------------------------
    @abstractmethod
    def server_argv(self, adapter_dir: str | None = None) -> list[str]:
        """The server command line (argv list), with an adapter preloaded when given (restart sync)."""

    @abstractmethod
    def server_env(self) -> dict[str, str]:
        ...

    @abstractmethod
    async def release(self) -> str:
        """Free the engine's memory in place (vLLM sleep, SGLang release); returns the phase detail."""

    def nothing_released(self) -> str:
        """"", or the reload's detail when nothing is released to wake (an engine that tracks its release)."""
        return ""

    @abstractmethod
    def staged_wake(self) -> bool:
        """The engine wakes the weights' memory apart from the rest (then `wake_up` wakes them in stages)."""

    @abstractmethod
    def weights_discarded(self) -> bool:
        """The release discarded the weights: serving again needs them read again (or synced)."""

    @abstractmethod
    async def wake(self, what: Wake) -> str:
        """Bring back part of what `release` freed; returns its piece of the detail."""

    async def reload_base_weights(self) -> str:
        """Read the base model's weights again into the woken memory; returns its piece of the detail."""
        raise EngineError("CONFIG", f"{self.backend} cannot read its weights again after discarding them")

    @abstractmethod
    async def woken(self, parts: list[str]) -> str:
        """After the last `wake`: check the engine serves again; returns the reload's detail from the pieces."""

    # -- a step's transitions: the same sequence on every engine ------------------------------------------
    async def offload(self) -> str:
        """Free the GPU for the trainer as the strategy says; returns the phase detail."""
        strategy = self.cfg.strategy
        if strategy == "keep":
            return "keep: engine stays resident"
        if strategy == "restart":
            await self.stop()
            return "server stopped (process group)"
        return await self.release()

    async def reload(self, adapter_dir: str | None) -> str:
        """Get back to serving after training; returns the phase detail. A restart starts the server with the
        new adapter when the sync is `restart` (which then has nothing left to do); anything else wakes up."""
        strategy = self.cfg.strategy
        if strategy == "keep":
            return "keep: nothing to reload"
        if strategy == "restart":
            restart_with = adapter_dir if self.cfg.sync == "restart" else None
            detail = await self.start(restart_with)
            return detail + (" with new adapter" if restart_with else "")
        return await self.wake_up()

    async def wake_up(self) -> str:
        """Undo `release` in the order RL frameworks use (vLLM's own snapshot server restores a level-2 sleep
        so too): the weights' memory first, the base weights read again where the release discarded them and
        no full sync brings them, then the rest (KV cache, CUDA graphs), a lower peak while the trainer's
        memory is still being returned. An engine that cannot wake in stages wakes all, then reads."""
        nothing = self.nothing_released()
        if nothing:
            return nothing
        reread = self.weights_discarded() and not self.full
        staged = self.staged_wake()
        parts = [await self.wake("weights" if staged else "all")]
        if reread:
            parts.append(await self.reload_base_weights())
        if staged:
            parts.append(await self.wake("rest"))
        return await self.woken(parts)

    async def sync_weights(self, adapter_dir: str, step: int) -> str:
        """Make the engine serve the new weights; returns the phase detail.

        `none` and `restart` mean the same on every engine; the rest is the engine's (`hot_sync`)."""
        sync = self.cfg.sync
        if sync == "none":
            return "none"
        if sync in FULL_SYNCS:
            raise EngineError("CONFIG", f"+{sync} moves full weights: sgtui/runner/weights.py syncs it, not "
                              "sync_weights (an adapter directory is not what the engine needs)")
        if sync == "restart":
            if self.cfg.strategy == "restart":
                return "included in reload (server restarted with the new adapter)"
            await self.stop()
            await self.start(adapter_dir)
            return "server restarted with the new adapter"
        return await self.hot_sync(adapter_dir, step)

    @abstractmethod
    async def hot_sync(self, adapter_dir: str, step: int) -> str:
        """Weight sync into the running server (LoRA load, disk reload); returns the phase detail."""

    # -- full-weight sync (`+disk`, `+ipc`: sgtui/runner/weights.py drives these) -----------------------
    def push_format(self) -> str:
        """How the trainer hands this engine its full weights: `disk`, or the engine's IPC wire format."""
        if self.cfg.sync == "disk":
            return "disk"
        raise EngineError("CONFIG", f"{self.backend} has no {self.cfg.sync!r} full-weight sync")

    async def full_sync_setup(self) -> float | None:
        """One-off set-up before the first full sync; its seconds (None: nothing to set up, or done)."""
        return None

    async def begin_full_sync(self) -> None:
        """Open the engine's weight-update session (IPC)."""

    async def load_bucket(self, msg: dict) -> None:
        """Load one bucket of IPC handles (the trainer's `bucket` message)."""
        raise EngineError("CONFIG", f"{self.backend} cannot load IPC buckets")

    async def end_full_sync(self) -> None:
        """Close the weight-update session (IPC); called after the last bucket."""

    async def load_checkpoint(self, path: str) -> None:
        """Reload the weights from a checkpoint directory the trainer wrote (disk)."""
        raise EngineError("CONFIG", f"{self.backend} cannot reload weights from disk")

    async def after_full_sync(self) -> str:
        """Drop what the old weights left behind (prefix caches); returns the phase detail."""
        return ""

    def check_checkpoint(self, path: str) -> None:
        """A reload from a directory without weights fails slowly or worse (measured, vLLM 0.32 on CPU: the
        engine looks the path up on the hub for ~2 s, answers 500, and leaves its model on meta tensors, so the
        next request kills the engine core): refuse it before the call."""
        d = Path(path)
        if not d.is_dir() or not any(d.glob("*.safetensors")):
            raise EngineError("WEIGHT_SYNC", f"no safetensors weights in {path}: the trainer wrote no checkpoint "
                              "there", advice="the trainer's export failed or was skipped: see the trainer log")

    @abstractmethod
    async def scrape(self) -> dict[str, float]:
        """Engine gauges from /metrics, with the shared names (kv_usage, running, waiting, prefix_hit_rate)."""

    async def capacity(self) -> dict[str, float]:
        """The KV-cache capacity as the server reports it now (`kv_capacity_tokens`: the pool in tokens, and
        what else the engine has, e.g. vLLM's `kv_blocks`); {} when it does not. The runner reads it before
        every rollout, outside the timed phases: at start, then after each wake-up or restart."""
        return {}

    async def version(self) -> str:
        return ""

    def request_model(self) -> str:
        return self.adapter_name or self.cfg.served_model_name

    def served_model_matches(self, asked: str, answered: str) -> bool:
        """The model a response names is the one the request asked for (the runner's adapter check)."""
        return answered == asked

    async def detach(self) -> None:
        """Leave an external server as it was found (e.g. unload the adapters this run loaded); best effort."""

    # -- shared lifecycle ---------------------------------------------------------------
    async def attach(self) -> str:
        """An external server: check that it answers as this engine, read what it is, refuse what it cannot do
        for this run (sgtui/external.py; the same line as preflight's), and serve its model name."""
        c = self.cfg
        try:
            srv = await asyncio.to_thread(external.probe, self.backend, self.base_url, min(10.0, c.server_timeout))
        except external.ExternalError as e:
            raise EngineError("CONFIG", str(e), advice=f"start the server, or fix --{self.backend}-url") from None
        why = external.refusal(c.label, self.backend, c.strategy, c.sync, srv)
        if why:
            raise EngineError("CONFIG", why)
        self.server = srv
        c.served_model_name = srv.models[0]  # requests ask for the name the server serves its model under
        detail = srv.describe()
        if c.sync == "none" and c.initial_adapter and not srv.lora:
            c.initial_adapter = ""  # nothing to load it with: the base model is served, and never synced
            detail += "; no LoRA on the server: the base model is served (+none)"
        if c.model and srv.root and Path(srv.root).expanduser().resolve() != Path(c.model).expanduser().resolve():
            detail += f"; prompts are tokenized with {c.model}"
        self.starts += 1
        return detail

    async def start(self, adapter_dir: str | None = None) -> str:
        """Spawn the server and wait for /health; raises EngineError with a category from the log.
        An external server is attached to instead (`attach`)."""
        if self.external:
            return await self.attach()
        if not port_free(self.cfg.port, self.cfg.host):
            raise EngineError("PORT_IN_USE", f"port {self.cfg.port} on {self.cfg.host} is already in use",
                              advice="pick another port (--vllm-port/--sglang-port) or stop what listens there")
        argv = self.server_argv(adapter_dir)
        self.argv = list(argv)
        # The runner itself is pinned to the trainer's devices (split placement): the server gets the engine's.
        placement = cuda_env(self.cfg.gpus) if self.cfg.device == "cuda" else {}
        env = {**os.environ, **placement, **self.server_env(), **self.cfg.env}
        self.pump_logs()  # what an earlier server instance left unread is not this start's
        self.graph_notes = []
        self.child = procs.spawn("engine", argv, self.log_path, env=env, run_label=self.cfg.label)
        if self._follower is None:
            self._follower = procs.LogFollower(self.log_path)
        self.starts += 1
        self.emit(Proc(t=time.time(), run=self.cfg.label, role="engine", pid=self.child.pid,
                       pgid=self.child.pgid, action="start", argv=argv))
        self._starting = True
        try:
            await self.wait_healthy(self.cfg.startup_timeout)
            self.pump_logs()  # lines written just before /health answered
        finally:
            self._starting = False
        detail = "cold start" if self.starts == 1 else "warm restart (same machine, caches warm)"
        return detail + "".join(f"; {n}" for n in self.graph_notes)

    async def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.pump_logs()
            child = self.child
            if child is None or not child.alive():
                rc = child.proc.returncode if child else None
                cat, advice, tail = failure(child.tail(LOG_SCAN) if child else [], "SERVER_CRASH")
                raise EngineError(cat, f"{self.backend} server exited during startup (exit code {rc})", tail, advice)
            try:
                r = await self.client.get("/health", timeout=5.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                cat, advice, tail = failure(child.tail(LOG_SCAN), "STARTUP_TIMEOUT")
                if cat in ("OTHER", "IMPORT_ERROR"):
                    cat = "STARTUP_TIMEOUT"
                raise EngineError(cat, f"{self.backend} server not healthy within {timeout:.0f} s", tail,
                                  advice or "raise --startup-timeout, or look at the server log")
            await asyncio.sleep(0.25)

    def check_alive(self) -> None:
        """Raise SERVER_CRASH if the server process group is gone."""
        child = self.child
        if child is not None and not child.alive():
            cat, advice, tail = failure(child.tail(LOG_SCAN), "SERVER_CRASH")
            if cat in ("OTHER", "IMPORT_ERROR"):
                cat = "SERVER_CRASH"
            raise EngineError(cat, f"{self.backend} server died (exit code {child.proc.returncode})", tail, advice)

    async def check_crashed(self) -> None:
        """After failed requests: raise SERVER_CRASH if the server is dead or no longer healthy.

        A killed server closes its sockets a moment before its process is reaped, so the
        process is given a short while to show up as exited, and health is asked too (SGLang's
        HTTP server can outlive its scheduler and answer 503).
        """
        for _ in range(20):
            self.check_alive()
            try:
                r = await self.client.get("/health", timeout=2.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        self.check_alive()
        raise EngineError("SERVER_CRASH", f"{self.backend} server stopped answering /health", self.tail())

    async def stop(self, grace: float = 15.0) -> None:
        if self.external:  # never ours to stop
            await self.detach()
            return
        child = self.child
        if child is None:
            return
        self.child = None
        await asyncio.to_thread(procs.stop_group, child.pgid, grace, child.proc)
        self.pump_logs()
        self.emit(Proc(t=time.time(), run=self.cfg.label, role="engine", pid=child.pid, pgid=child.pgid,
                       action="exit", returncode=child.proc.returncode if child.proc.returncode is not None else 0))
        await asyncio.to_thread(procs.wait_port_free, self.cfg.port, self.cfg.host, 10.0)

    def stop_now(self) -> None:
        """Synchronous teardown for the runner's last line of defence (signal handlers, atexit)."""
        child = self.child
        if child is not None:
            self.child = None
            procs.stop_group(child.pgid, 5.0, child.proc)
            # The orchestrator keeps every started group on its cleanup list until it sees it reaped.
            rc = child.proc.returncode
            self.emit(Proc(t=time.time(), run=self.cfg.label, role="engine", pid=child.pid, pgid=child.pgid,
                           action="exit", returncode=rc if rc is not None else 0))

    def pump_logs(self) -> None:
        if self._follower is None:
            return
        t = time.time()
        for line in self._follower.read_new():
            self.emit(Log(t=t, run=self.cfg.label, source="engine", line=line[:2000]))
            if self._starting and (note := graph_capture_note(line)):
                self.graph_notes.append(note)

    async def post(self, path: str, json: dict | None = None, params: dict | None = None,
                   timeout: float | None = None) -> httpx.Response:
        """POST a control endpoint; failures become categorized EngineErrors."""
        try:
            r = await self.client.post(path, json=json, params=params, timeout=timeout or self.cfg.server_timeout)
        except httpx.TimeoutException:
            raise EngineError("SERVER_TIMEOUT", f"{self.backend} {path} did not answer within "
                              f"{timeout or self.cfg.server_timeout:.0f} s", self.tail(),
                              "raise --server-timeout or look at the server log") from None
        except httpx.HTTPError as e:
            self.check_alive()
            raise EngineError("SERVER_CRASH", f"{self.backend} {path}: {type(e).__name__}: {e}", self.tail()) from None
        if r.status_code != 200:
            tail = self.tail()
            cat, advice = categorize([r.text] + tail, "OTHER")
            raise EngineError(cat, f"{self.backend} {path} answered {r.status_code}: {r.text[:300]}", tail, advice)
        return r

    def tail(self, n: int = 40) -> list[str]:
        return procs.log_tail(self.log_path, n)

    def counter_rate(self, key: str, hits: float | None, queries: float | None) -> float | None:
        """Hit rate over the last scrape interval from two monotonically increasing counters."""
        if hits is None or queries is None:
            return None
        ph, pq = self._counters.get(key + ".h"), self._counters.get(key + ".q")
        self._counters[key + ".h"], self._counters[key + ".q"] = hits, queries
        if ph is None or pq is None or queries <= pq:
            return None
        return (hits - ph) / (queries - pq)

    async def aclose(self) -> None:
        await self.client.aclose()
