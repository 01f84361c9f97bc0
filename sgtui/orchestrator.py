"""Spawn runners, read their event streams, tee everything to the session, cancel cleanly.

Each runner runs in its own process group; it starts its engine and trainer
in groups of their own and announces them with `proc` events, so that when a
runner dies without cleaning up (kill -9), the orchestrator still tears down
every group it left behind. Every event, from the runners and from the GPU
sampler, goes through one lock: written to the session file first, then to
subscribers (the state fold, the UI, the headless printer).

The UI runs `Orchestrator.run()` in a worker thread with its own event loop
and calls the thread-safe `cancel()`; the headless CLI runs it in the main
thread, where SIGINT/SIGTERM/SIGHUP become the same cancel.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sgtui import gpu
from sgtui.config import RunConfig
from sgtui.events import Error, Event, EventError, Log, Proc, RunEnd, RunStart, decode
from sgtui.runner.procs import group_alive as _group_alive
from sgtui.session import SessionWriter, make_header

REPO_ROOT = Path(__file__).resolve().parent.parent
STDOUT_LIMIT = 64 * 1024 * 1024  # one request event with a long ITL list can be large


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def stop_groups(pgids: list[int], grace: float) -> None:
    """SIGTERM every group, wait up to grace, SIGKILL what is left, wait until they are gone."""
    alive = [p for p in pgids if _group_alive(p)]
    for p in alive:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        alive = [p for p in alive if _group_alive(p)]
    for p in alive:
        _signal_group(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        alive = [p for p in alive if _group_alive(p)]


@dataclass
class RunHandle:
    cfg: RunConfig
    proc: asyncio.subprocess.Process | None = None
    groups: set[int] = field(default_factory=set)  # pgids announced by the runner, still alive
    started: bool = False
    ended: bool = False
    status: str = "pending"
    stderr_path: Path | None = None


class Orchestrator:
    def __init__(self, runs: list[RunConfig], session_path: Path, *, argv: list[str] | None = None,
                 session_config: dict | None = None, subscribers: list[Callable[[Event], None]] | None = None,
                 gpu_interval: float = 0.2, grace: float = 20.0, concurrent: bool = False,
                 runner_argv: Callable[[RunConfig], list[str]] | None = None, sample_gpus: bool = True) -> None:
        self.handles = [RunHandle(cfg) for cfg in runs]
        self.session_path = Path(session_path)
        self.argv = argv or sys.argv
        self.session_config = session_config or {"runs": [c.to_dict() for c in runs]}
        self.subscribers = list(subscribers or [])
        self.gpu_interval = gpu_interval
        self.grace = grace
        self.concurrent = concurrent
        self.runner_argv = runner_argv or (lambda c: [c.python or sys.executable, "-m", "sgtui.runner",
                                                      "--config", c.to_json()])
        self.sample_gpus = sample_gpus
        self.writer: SessionWriter | None = None
        self.fatal: str = ""  # e.g. the session file could not be written
        self._lock = threading.Lock()
        self._cancel_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancel_event: asyncio.Event | None = None
        self._pgid_owner: dict[int, str] = {}

    # -- recording ------------------------------------------------------------------------
    def record(self, event: Event) -> None:
        """Write then publish one event; thread-safe (runner readers and the GPU sampler call it)."""
        with self._lock:
            if self.writer is not None and not self.fatal:
                try:
                    self.writer.write(event)
                except OSError as e:
                    self.fatal = f"cannot write session {self.session_path}: {e.strerror or e}"
                    self._request_cancel_locked()
            for sub in self.subscribers:
                sub(event)

    def owner_of(self, pid: int) -> str:
        pgid = gpu.pgid_of(pid)
        return self._pgid_owner.get(pgid, "") if pgid is not None else ""

    # -- cancel ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Thread-safe: stop every run cleanly (runners get SIGTERM, then their groups are torn down)."""
        with self._lock:
            self._request_cancel_locked()

    def _request_cancel_locked(self) -> None:
        self._cancel_requested.set()
        loop, ev = self._loop, self._cancel_event
        if loop is not None and ev is not None:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested.is_set()

    # -- running --------------------------------------------------------------------------
    def run_sync(self) -> dict[str, str]:
        return asyncio.run(self.run())

    async def run(self) -> dict[str, str]:
        """Run every configured run; returns label -> status. Raises OSError if the session can't be created."""
        self._loop = asyncio.get_running_loop()
        self._cancel_event = asyncio.Event()
        if self._cancel_requested.is_set():
            self._cancel_event.set()
        self.writer = SessionWriter(self.session_path)
        self.record(make_header(list(self.argv), self.session_config))
        installed = self._install_signal_handlers()
        sampler = None
        if self.sample_gpus:
            sampler = gpu.GpuSampler(self.record, self.gpu_interval, owner_of=self.owner_of)
            sampler.start()
        try:
            if self.concurrent:
                await asyncio.gather(*(self._run_one(h) for h in self.handles))
            else:
                for h in self.handles:
                    if self.cancelled:
                        break
                    await self._run_one(h)
        finally:
            if sampler is not None:
                sampler.stop()
                sampler.join(timeout=2)
            for sig in installed:
                self._loop.remove_signal_handler(sig)
            with self._lock:
                if self.writer is not None:
                    self.writer.close()
        return {h.cfg.label: h.status for h in self.handles}

    def _install_signal_handlers(self) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []
        sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        for sig in sigs:
            self._loop.add_signal_handler(sig, self.cancel)  # type: ignore[union-attr]
        return sigs

    def _env_for(self, cfg: RunConfig) -> dict[str, str]:
        env = dict(os.environ)
        # Engine venvs do not have sgtui installed: the runner is always this checkout's code.
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        if cfg.gpus and cfg.device == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in cfg.gpus)
        return env

    async def _run_one(self, h: RunHandle) -> None:
        cfg = h.cfg
        workdir = Path(cfg.workdir) if cfg.workdir else self.session_path.with_suffix(".d") / cfg.label
        workdir.mkdir(parents=True, exist_ok=True)
        h.stderr_path = workdir / "runner.stderr.log"
        h.status = "running"
        with open(h.stderr_path, "ab") as err:
            try:
                h.proc = await asyncio.create_subprocess_exec(
                    *self.runner_argv(cfg), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                    stderr=err, env=self._env_for(cfg), start_new_session=True, limit=STDOUT_LIMIT)
            except OSError as e:
                self.record(Error(t=time.time(), run=cfg.label, category="IMPORT_ERROR",
                                  message=f"cannot start runner {cfg.python!r}: {e.strerror or e}",
                                  advice="check --vllm-python/--sglang-python or re-run setup/setup.sh"))
                self.record(RunEnd(t=time.time(), run=cfg.label, status="failed", detail="runner did not start"))
                h.status = "failed"
                return
        self._pgid_owner[h.proc.pid] = cfg.label
        reader = asyncio.create_task(self._read(h))
        cancel_wait = asyncio.create_task(self._cancel_event.wait())  # type: ignore[union-attr]
        done, _ = await asyncio.wait({reader, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
        if cancel_wait in done and not reader.done():
            await self._cancel_run(h, reader)
        cancel_wait.cancel()
        await reader
        rc = await h.proc.wait()
        # Whatever the runner left behind (it was killed, or crashed) goes down by group.
        await stop_groups([h.proc.pid, *h.groups], grace=2.0)
        if not h.ended:
            tail = _tail(h.stderr_path)
            if self.cancelled:
                h.status = "cancelled"
                self.record(RunEnd(t=time.time(), run=cfg.label, status="cancelled",
                                   detail="cancelled; runner stopped by the orchestrator"))
            else:
                h.status = "failed"
                how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
                self.record(Error(t=time.time(), run=cfg.label, category="OTHER",
                                  message=f"runner ended without run_end ({how})", log_tail=tail))
                self.record(RunEnd(t=time.time(), run=cfg.label, status="failed", detail=f"runner {how}"))

    async def _cancel_run(self, h: RunHandle, reader: asyncio.Task) -> None:
        """SIGTERM the runner (it ends its phase, stops its children, writes run_end), then force."""
        assert h.proc is not None
        _signal_group(h.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout=self.grace)
        except asyncio.TimeoutError:
            pass
        await stop_groups([h.proc.pid, *h.groups], grace=2.0)

    async def _read(self, h: RunHandle) -> None:
        assert h.proc is not None and h.proc.stdout is not None
        label = h.cfg.label
        lineno = 0
        while True:
            try:
                line = await h.proc.stdout.readline()
            except ValueError:  # a line beyond the limit: keep going, say so
                self.record(Log(t=time.time(), run=label, source="orchestrator", line="runner line too long; skipped"))
                continue
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                event = decode(line, lineno)
            except EventError as e:
                self.record(Log(t=time.time(), run=label, source="runner-stdout",
                                line=line.decode("utf-8", "replace").rstrip("\n")[:2000]))
                if line.lstrip().startswith(b"{"):
                    self.record(Log(t=time.time(), run=label, source="orchestrator", line=f"bad event: {e}"))
                continue
            if isinstance(event, Proc):
                if event.action == "start":
                    h.groups.add(event.pgid)
                    self._pgid_owner[event.pgid] = label
                else:
                    h.groups.discard(event.pgid)
            elif isinstance(event, RunStart):
                h.started = True
            elif isinstance(event, RunEnd):
                h.ended = True
                h.status = event.status
            self.record(event)


def _tail(path: Path | None, n: int = 40) -> list[str]:
    if path is None:
        return []
    try:
        data = path.read_bytes()[-65536:]
    except OSError:
        return []
    return list(deque(data.decode("utf-8", "replace").splitlines(), maxlen=n))
