"""Spawn runners, read their event streams, tee everything to the session, cancel cleanly.

Each runner runs in its own process group; it starts its engine and trainer
in groups of their own and announces them with `proc` events, so that when a
runner dies without cleaning up (kill -9), the orchestrator still tears down
every group it left behind. Every event, from the runners and from the GPU
sampler, goes through one lock: written to the session file first, then to
subscribers (the state fold, the UI, the headless printer).

API for a front end (CLI or UI):

    orch = Orchestrator(runs, session_path, subscribers=[callback], concurrent=False)  # or interleave=True
    statuses = orch.run_sync()        # or `await orch.run()`; label -> ok | failed | cancelled | pending
                                      # raises OSError (session not creatable) or portlock.PortBusy
    orch.cancel()                     # from any thread; a second call skips the grace period
    orch.fatal                        # "" or why the runs were stopped (e.g. the session can't be written)

Designs: runs one after another (default), all at once (`concurrent`), or taking turns step by step
(`interleave`: every runner starts at once and waits on its stdin for `turn N`; this process hands the turns
out, one run inside a step at a time, the next turn once the last one's `park` phase or run ended: see
sgtui/turns.py). The session header's config says which (`design`).

Beside the GPU sampler a host sampler (sgtui.host, 1 s) records the CPU the machine spent beyond the
session's own process groups: the witness of foreign load for each step.

The UI runs `run_sync()` in a thread of its own (or `run()` as a task) and
calls the thread-safe `cancel()`; the headless CLI runs it in the main thread,
where SIGINT/SIGTERM/SIGHUP become the same cancel. Subscribers are called
from the orchestrator's loop thread and from the GPU sampler thread, one at a
time (under the lock); they must be quick and must not call back into the
orchestrator except `cancel()`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sgtui import gpu, host, pkgpath, portlock
from sgtui.childproc import MARKER_OWNER, MARKER_RUN, die_with_parent, parent_death_signal
from sgtui.childproc import group_alive as _group_alive
from sgtui.config import RunConfig, cuda_env
from sgtui.events import Error, Event, EventError, Log, Phase, Proc, RunEnd, RunStart, SessionHeader, decode
from sgtui.session import SessionWriter, make_header
from sgtui.turns import PARK, turn_line

REPO_ROOT = Path(__file__).resolve().parent.parent  # a checkout's root (tests, setup/); never a child's PYTHONPATH
STDOUT_LIMIT = 64 * 1024 * 1024  # one request event with a long ITL list can be large
DRAIN_TIMEOUT = 5.0  # after the runner exited: seconds to read what is left in its stdout pipe


def runner_env(cfg: RunConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the run's runner process (from `base`, default this process's environment).

    Engine venvs do not have sgtui installed: the runner is this sgtui's own package, put on the runner's
    PYTHONPATH alone (`sgtui.pkgpath`), never the directory above it, which after a `pip install` is sgtui's
    whole site-packages and would shadow the engine venv's own packages."""
    env = dict(os.environ if base is None else base)
    env.update(cfg.env)
    pkgpath.child_env(env)
    env["PYTHONUNBUFFERED"] = "1"
    # The marker lets preflight find a runner whose sgtui died (the runner overwrites it for its children).
    env[MARKER_RUN] = cfg.label
    env[MARKER_OWNER] = str(os.getpid())
    if cfg.device == "cuda":
        env.update(cuda_env(cfg.train_gpus or cfg.gpus))  # the runner hosts the simulated trainer
    return env


def _signal_group(pgid: int, sig: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():  # never our own group, never init's
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def stop_groups(pgids: list[int], grace: float, force: asyncio.Event | None = None) -> None:
    """SIGTERM every group, wait up to grace (less if `force` is set), SIGKILL what is left, wait until gone."""
    alive = [p for p in dict.fromkeys(pgids) if p > 1 and p != os.getpgrp() and _group_alive(p)]
    for p in alive:
        _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline and not (force is not None and force.is_set()):
        await asyncio.sleep(0.05)
        alive = [p for p in alive if _group_alive(p)]
    for p in alive:
        _signal_group(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        alive = [p for p in alive if _group_alive(p)]


def concurrency_problems(runs: list[RunConfig]) -> list[str]:
    """Why these runs cannot run at the same time (one line each); empty if they can.

    Runs at once need their own ports and, on GPUs, disjoint devices (engine and
    trainer devices together), or they measure each other.
    """
    problems = []
    seen_ports: dict[tuple[str, int], str] = {}
    for r in runs:
        key = (r.host, r.port)
        if key in seen_ports:
            problems.append(f"runs {seen_ports[key]} and {r.label} both use port {r.port}; give each its own port")
        seen_ports.setdefault(key, r.label)
    owner: dict[int, str] = {}
    for r in runs:
        if r.device != "cuda":
            continue
        for g in sorted(set(r.gpus) | set(r.train_gpus)):
            if g in owner and owner[g] != r.label:
                problems.append(f"runs {owner[g]} and {r.label} both use GPU {g}; concurrent runs need disjoint GPUs "
                                "(--gpus with enough devices, --placement split)")
            owner.setdefault(g, r.label)
    return problems


def distinct_ports(runs: list[RunConfig]) -> None:
    """Give runs whose servers are up at the same time (--concurrent, --interleave) a port each."""
    used: set[tuple[str, int]] = set()
    for r in runs:
        while (r.host, r.port) in used:
            r.port += 1
        used.add((r.host, r.port))


@dataclass
class RunHandle:
    cfg: RunConfig
    proc: asyncio.subprocess.Process | None = None
    groups: dict[int, str] = field(default_factory=dict)  # pgid -> role, announced by the runner, not yet exited
    started: bool = False
    ended: bool = False
    status: str = "pending"  # pending | running | ok | failed | cancelled
    stderr_path: Path | None = None
    stderr_tail: list[str] = field(default_factory=list)  # last lines of the runner's stderr once it ended
    returncode: int | None = None
    #: --interleave: set once the runner process exists (or could not start), and at the end of each turn
    spawned: asyncio.Event | None = None
    turn_over: asyncio.Event | None = None
    finished: bool = False  # _run_one is done with it (exited, groups stopped)


class Orchestrator:
    def __init__(self, runs: list[RunConfig], session_path: Path, *, argv: list[str] | None = None,
                 session_config: dict | None = None, subscribers: list[Callable[[Event], None]] | None = None,
                 gpu_interval: float = 0.2, grace: float = 20.0, concurrent: bool = False,
                 runner_argv: Callable[[RunConfig], list[str]] | None = None, sample_gpus: bool = True,
                 interleave: bool = False, sample_host: bool | None = None, host_interval: float = 1.0) -> None:
        if concurrent and interleave:
            raise ValueError("concurrent and interleave exclude each other")
        self.handles = [RunHandle(cfg) for cfg in runs]
        self.session_path = Path(session_path)
        self.argv = argv or sys.argv
        self.interleave = interleave
        design = "interleaved" if interleave else "concurrent" if concurrent else "sequential"
        self.session_config = {**(session_config or {"runs": [c.to_dict() for c in runs]}),
                               "design": design, "concurrent": concurrent, "interleave": interleave,
                               "host_interval_s": host_interval if (sample_gpus if sample_host is None
                                                                    else sample_host) else 0.0}
        #: the host sampler (foreign CPU load); off with the GPU sampler unless asked (stand-in runner tests)
        self.sample_host = sample_gpus if sample_host is None else sample_host
        self.host_interval = host_interval
        self.subscribers = list(subscribers or [])
        self.gpu_interval = gpu_interval
        self.grace = grace
        self.concurrent = concurrent
        self.runner_argv = runner_argv or (lambda c: [c.python or sys.executable, "-m", "sgtui.runner",
                                                      "--config", c.to_json()])
        self.sample_gpus = sample_gpus
        self.writer: SessionWriter | None = None
        self.fatal: str = ""  # e.g. the session file could not be written
        self.subscriber_errors: list[str] = []
        self._lock = threading.RLock()
        self._cancel_requested = threading.Event()
        self._force_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancel_event: asyncio.Event | None = None
        self._force_event: asyncio.Event | None = None
        self._pgid_owner: dict[int, str] = {}
        self._pgid_role: dict[int, str] = {}

    # -- recording ------------------------------------------------------------------------
    def record(self, event: Event) -> None:
        """Write then publish one event; thread-safe (runner readers and the GPU sampler call it)."""
        with self._lock:
            if self.writer is not None and not self.fatal:
                try:
                    self.writer.write(event)
                except (OSError, ValueError) as e:  # disk full, fs gone, or already closed
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    self.fatal = f"cannot write session {self.session_path}: {why}"
                    self._request_cancel_locked()
            for sub in list(self.subscribers):
                try:
                    sub(event)
                except Exception as e:  # noqa: BLE001 - a broken subscriber must not stop the runs
                    # (e.g. the headless printer after the terminal went away: SIGHUP, EIO)
                    if len(self.subscriber_errors) < 20:
                        self.subscriber_errors.append(f"{getattr(sub, '__name__', type(sub).__name__)}: "
                                                      f"{type(e).__name__}: {e}")

    def owner_of(self, pid: int) -> str:
        """Run label owning a process (through its process group), or "" (shown as "other")."""
        pgid = gpu.pgid_of(pid)
        return self._pgid_owner.get(pgid, "") if pgid is not None else ""

    def role_of(self, pid: int) -> str:
        """What a process is in its run: the group a runner announced (engine, trainer), runner for the runner's
        own group (it hosts the simulated trainer), "" when unknown."""
        pgid = gpu.pgid_of(pid)
        return self._pgid_role.get(pgid, "") if pgid is not None else ""

    @property
    def statuses(self) -> dict[str, str]:
        return {h.cfg.label: h.status for h in self.handles}

    # -- cancel ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Thread-safe: stop every run cleanly (runners get SIGTERM, then their groups are torn down).

        A second call while the first is in progress skips the grace period (SIGKILL now)."""
        with self._lock:
            if self._cancel_requested.is_set():
                self._force_requested.set()
                self._wake(self._force_event)
            self._request_cancel_locked()

    def _request_cancel_locked(self) -> None:
        self._cancel_requested.set()
        self._wake(self._cancel_event)

    def _wake(self, ev: asyncio.Event | None) -> None:
        loop = self._loop
        if loop is not None and ev is not None:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop closed: nothing to wake
                pass

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested.is_set()

    # -- running --------------------------------------------------------------------------
    def run_sync(self) -> dict[str, str]:
        """Run in a fresh event loop (in the calling thread); see `run`."""
        return asyncio.run(self.run())

    async def run(self) -> dict[str, str]:
        """Run every configured run; returns label -> status. Raises OSError if the session can't be created."""
        self._loop = asyncio.get_running_loop()
        self._cancel_event = asyncio.Event()
        self._force_event = asyncio.Event()
        if self._cancel_requested.is_set():
            self._cancel_event.set()
        if self._force_requested.is_set():
            self._force_event.set()
        # One sgtui per engine port (see sgtui.portlock): PortBusy here, before the session exists.
        locks = portlock.acquire([h.cfg.port for h in self.handles if not h.cfg.external_url],  # binds nothing
                                 str(self.session_path))
        try:
            writer = SessionWriter(self.session_path)  # OSError here: nothing started yet
        except BaseException:
            locks.release()
            raise
        with self._lock:
            self.writer = writer
        self.record(make_header(list(self.argv), self.session_config,
                                gpu_interval_s=self.gpu_interval if self.sample_gpus else 0.0))
        installed = self._install_signal_handlers()
        sampler = None
        if self.sample_gpus:
            sampler = gpu.GpuSampler(self.record, self.gpu_interval, owner_of=self.owner_of,
                                     sampler=functools.partial(gpu.sample, role_of=self.role_of))
            sampler.start()
        host_sampler = None
        if self.sample_host:
            host_sampler = host.HostSampler(self.record, lambda: dict(self._pgid_owner), self.host_interval)
            host_sampler.start()
        try:
            if self.concurrent:
                await asyncio.gather(*(self._run_one(h) for h in self.handles))
            elif self.interleave:
                for h in self.handles:
                    h.spawned, h.turn_over = asyncio.Event(), asyncio.Event()
                await asyncio.gather(*(self._run_turned(h) for h in self.handles), self._hand_out_turns())
            else:
                for h in self.handles:
                    if self.cancelled:
                        break
                    await self._run_one(h)
        finally:
            if sampler is not None:
                sampler.stop()
                await asyncio.to_thread(sampler.join, 2)
            if host_sampler is not None:
                host_sampler.stop()
                await asyncio.to_thread(host_sampler.join, 2)
            for sig in installed:
                self._loop.remove_signal_handler(sig)
            with self._lock:
                if self.writer is not None:
                    self.writer.close()
                    self.writer = None
            locks.release()
        return self.statuses

    def _install_signal_handlers(self) -> list[int]:
        if threading.current_thread() is not threading.main_thread():
            return []
        sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        for sig in sigs:
            self._loop.add_signal_handler(sig, self.cancel)  # type: ignore[union-attr]
        return sigs

    def _env_for(self, cfg: RunConfig) -> dict[str, str]:
        return runner_env(cfg)

    async def _run_one(self, h: RunHandle) -> None:
        cfg = h.cfg
        if self.cancelled:
            return
        workdir = Path(cfg.workdir) if cfg.workdir else self.session_path.with_suffix(".d") / cfg.label
        # The runner writes engine logs and adapters there too: beside the session, never into a cwd-relative
        # runs/LABEL shared by every session (and every concurrent sgtui) started from the same directory.
        cfg.workdir = str(workdir.absolute())
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            h.stderr_path = workdir / "runner.stderr.log"
            err = open(h.stderr_path, "ab")
        except OSError as e:
            self._not_started(h, "OTHER", f"cannot create the run's directory {workdir}: {e.strerror or e}",
                              "pass --output DIR on a writable disk")
            return
        h.status = "running"
        with err:
            try:
                turned = ["--interleave"] if self.interleave else []  # its stdin then carries the turns
                h.proc = await asyncio.create_subprocess_exec(
                    *self.runner_argv(cfg), *turned, stdout=asyncio.subprocess.PIPE,
                    stdin=asyncio.subprocess.PIPE if self.interleave else asyncio.subprocess.DEVNULL,
                    stderr=err, env=self._env_for(cfg), start_new_session=True, limit=STDOUT_LIMIT,
                    preexec_fn=die_with_parent if parent_death_signal() else None)
            except OSError as e:
                self._not_started(h, "IMPORT_ERROR", f"cannot start runner {cfg.python!r}: {e.strerror or e}",
                                  f"check the interpreter of run {cfg.label} (--{cfg.backend}-python or --run ...@PYTHON)")
                return
        proc = h.proc
        self._pgid_owner[proc.pid] = cfg.label
        self._pgid_role[proc.pid] = "runner"
        if h.spawned is not None:
            h.spawned.set()
        reader = asyncio.create_task(self._read(h))
        exited = asyncio.create_task(_wait_exit(proc))
        cancel_wait = asyncio.create_task(self._cancel_event.wait())  # type: ignore[union-attr]
        crash_category = "OTHER"
        try:
            while not exited.done():
                waits = {exited, cancel_wait} | ({reader} if not reader.done() else set())
                # A runner that said run_end and closed stdout but does not exit is stopped after the grace.
                timeout = self.grace if reader.done() and h.ended else None
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if exited in done:
                    break
                if cancel_wait in done:
                    await self._cancel_run(h, exited)
                    break
                if not done:
                    self.record(Log(t=time.time(), run=cfg.label, source="orchestrator",
                                    line=f"runner did not exit {self.grace:.0f} s after run_end; stopping its group"))
                    await stop_groups([proc.pid], grace=2.0)
            await exited
            h.returncode = proc.returncode
            # An engine group that died before its runner (without a `proc` exit) crashed and took the runner along.
            if any(role == "engine" and not _group_alive(g) for g, role in h.groups.items()):
                crash_category = "SERVER_CRASH"
            # Whatever the runner left behind (it was killed, or crashed) goes down by group. This also closes
            # the stdout pipe if a grandchild of the same group inherited it.
            await stop_groups([proc.pid, *h.groups], grace=2.0, force=self._force_event)
            try:
                await asyncio.wait_for(asyncio.shield(reader), timeout=DRAIN_TIMEOUT)
            except asyncio.TimeoutError:  # something outside the announced groups holds the pipe
                reader.cancel()
                self.record(Log(t=time.time(), run=cfg.label, source="orchestrator",
                                line="runner stdout still open after it exited (an unannounced process holds it)"))
        finally:
            cancel_wait.cancel()
            if not reader.done():
                reader.cancel()
        h.stderr_tail = _tail(h.stderr_path)
        if h.ended:
            return
        rc = h.returncode if h.returncode is not None else 0
        how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
        if self.cancelled:
            h.status = "cancelled"
            self.record(RunEnd(t=time.time(), run=cfg.label, status="cancelled",
                               detail=f"cancelled; runner stopped by the orchestrator ({how})"))
        else:
            h.status = "failed"
            what = "its engine server died, then the runner" if crash_category == "SERVER_CRASH" else "runner"
            self.record(Error(t=time.time(), run=cfg.label, category=crash_category,
                              message=f"{what} ended without run_end ({how})", log_tail=h.stderr_tail,
                              advice=f"see {h.stderr_path}"))
            self.record(RunEnd(t=time.time(), run=cfg.label, status="failed", detail=f"runner {how}"))

    # -- --interleave ---------------------------------------------------------------------
    async def _run_turned(self, h: RunHandle) -> None:
        """_run_one, then the run gets no more turns (whatever way it ended), and its turn channel closes."""
        try:
            await self._run_one(h)
        finally:
            h.finished = True
            for ev in (h.spawned, h.turn_over):
                if ev is not None:
                    ev.set()
            if h.proc is not None and h.proc.stdin is not None:
                h.proc.stdin.close()

    async def _hand_out_turns(self) -> None:
        """Turn 0 (setup) to each run in order, then turn 1 to each, ...: one run at a time, each turn once the
        last one is over. A run that ended (failed, crashed) is skipped; the others go on alone. At the end, or
        on cancel, every runner's stdin closes: a runner still waiting for a turn then ends (cancelled)."""
        try:
            for n in range(max((h.cfg.num_steps for h in self.handles), default=0) + 1):
                for h in self.handles:
                    if self.cancelled:
                        return
                    if n <= h.cfg.num_steps:
                        await self._turn(h, n)
        finally:
            for h in self.handles:
                if h.proc is not None and h.proc.stdin is not None:
                    h.proc.stdin.close()

    async def _turn(self, h: RunHandle, n: int) -> None:
        assert h.spawned is not None and h.turn_over is not None
        await h.spawned.wait()
        if h.finished or h.ended or h.proc is None or h.proc.stdin is None:
            return
        h.turn_over.clear()
        try:
            h.proc.stdin.write(turn_line(n))
            await h.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):  # the runner is gone: _run_turned ends the run
            return
        over = asyncio.create_task(h.turn_over.wait())
        cancel = asyncio.create_task(self._cancel_event.wait())  # type: ignore[union-attr]
        try:
            await asyncio.wait({over, cancel}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            over.cancel()
            cancel.cancel()

    def _not_started(self, h: RunHandle, category: str, message: str, advice: str) -> None:
        self.record(Error(t=time.time(), run=h.cfg.label, category=category, message=message, advice=advice))
        self.record(RunEnd(t=time.time(), run=h.cfg.label, status="failed", detail="runner did not start"))
        h.status = "failed"

    async def _cancel_run(self, h: RunHandle, exited: asyncio.Task) -> None:
        """SIGTERM the runner's group (it ends its phase, stops its children, writes run_end), then force."""
        assert h.proc is not None
        _signal_group(h.proc.pid, signal.SIGTERM)
        force = asyncio.create_task(self._force_event.wait())  # type: ignore[union-attr]
        try:
            await asyncio.wait({exited, force}, timeout=self.grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
        await stop_groups([h.proc.pid, *h.groups], grace=0.0 if self._force_event.is_set() else 2.0,
                          force=self._force_event)

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
            other = getattr(event, "run", label)
            if isinstance(event, SessionHeader) or other != label:
                # A runner speaks only for its own run; a header or another run's event would corrupt the session.
                self.record(Log(t=time.time(), run=label, source="orchestrator",
                                line=f"ignored {event.kind} event for run {other!r} from runner {label}"))
                continue
            if isinstance(event, Proc):
                if event.action == "start":
                    h.groups[event.pgid] = event.role
                    self._pgid_owner[event.pgid] = label
                    self._pgid_role[event.pgid] = event.role
                else:
                    h.groups.pop(event.pgid, None)
            elif isinstance(event, RunStart):
                h.started = True
            elif isinstance(event, RunEnd):
                h.ended = True
                h.status = event.status
            self.record(event)
            if h.turn_over is not None and (isinstance(event, RunEnd) or (
                    isinstance(event, Phase) and event.name == PARK and event.edge == "end")):
                h.turn_over.set()  # --interleave: after the event is recorded, the next run's turn


async def _wait_exit(proc: asyncio.subprocess.Process, poll: float = 0.05) -> int:
    """The runner's exit code, as soon as it has exited.

    Not `proc.wait()`: before Python 3.12 that also waits until every pipe is closed, and a
    grandchild that inherited the runner's stdout would keep it waiting after the runner died."""
    while proc.returncode is None:
        await asyncio.sleep(poll)
    return proc.returncode


def _tail(path: Path | None, n: int = 40) -> list[str]:
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            data = f.read()
    except OSError:
        return []
    return list(deque(data.decode("utf-8", "replace").splitlines(), maxlen=n))
