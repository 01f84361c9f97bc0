"""What the vLLM and SGLang engine tests share: a run config, the real engine class with a
FAULT-INJECTION server swapped in for the engine's module, and the checks on what is left behind."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest

from sgtui.config import RunConfig
from sgtui.events import Phase, Proc
from sgtui.runner.engines.base import Engine
from tests.engines import free_port, port_is_free


def make_cfg(tmp_path: Path, **kw) -> RunConfig:
    """Small, fast limits; `kw` names at least backend and strategy."""
    base = dict(sync="lora", python=sys.executable,
                model=str(tmp_path / "model"), port=free_port(), workdir=str(tmp_path / "w"), server_timeout=10.0,
                startup_timeout=20.0, num_steps=2, num_rollouts=4, concurrency=4, max_input_tokens=16,
                max_output_tokens=8, sim_train_seconds=0.05, warmup_requests=1)
    base.update(kw)
    (tmp_path / "model").mkdir(parents=True, exist_ok=True)
    return RunConfig(**base)


class FaultServer:
    """Mixin over a real engine class: its argv is built as usual, then the fault server runs it instead of
    the engine's module (`--sgtui-plan` the faults, `--sgtui-record` one JSON line per handled call)."""

    SERVER: Path
    MODULE: str  # the module the real argv runs, e.g. "sglang.launch_server"
    plan: dict = {}

    def server_argv(self, adapter_dir: str | None = None) -> list[str]:
        real = super().server_argv(adapter_dir)  # type: ignore[misc]
        assert real[1:3] == ["-m", self.MODULE]
        self.last_argv = real
        return [sys.executable, str(self.SERVER), *real[3:], "--sgtui-plan", orjson.dumps(self.plan).decode(),
                "--sgtui-record", str(self.record_path)]

    @property
    def record_path(self) -> Path:
        return self.workdir / "calls.jsonl"  # type: ignore[attr-defined]

    def calls(self) -> list[dict]:
        if not self.record_path.exists():
            return []
        return [orjson.loads(x) for x in self.record_path.read_bytes().splitlines() if x.strip()]


def make_engine(cls, cfg: RunConfig, plan: dict | None = None) -> tuple:
    events: list = []
    wd = Path(cfg.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    eng = cls(cfg, events.append, wd)
    eng.plan = plan or {}
    return eng, events


def adapter_dir(tmp_path: Path, name: str = "adapter") -> str:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "adapter_config.json").write_text("{}")
    return str(d)


def assert_gone(events: list, port: int) -> None:
    """Every process group the engine started is gone and its port is free."""
    for p in [e for e in events if isinstance(e, Proc)]:
        with pytest.raises(ProcessLookupError):
            os.killpg(p.pgid, 0)
    assert port_is_free(port)


@asynccontextmanager
async def stopped_after(eng: Engine) -> AsyncIterator[Engine]:
    """Run the body with `eng`, then stop its process group and close its client however the body ends, so a
    failing test leaves no server behind (and its port free for the next one)."""
    try:
        yield eng
    finally:
        await eng.stop()
        await eng.aclose()


async def complete(eng: Engine, model: str) -> tuple[int, dict]:
    """One short non-streamed completion straight to the server: (status, JSON body)."""
    r = await eng.client.post("/v1/completions", json={"model": model, "prompt": "p", "max_tokens": 8})
    return r.status_code, r.json()


async def assert_sigkilled_after_grace(eng: Engine, events: list) -> None:
    """Stop a server that ignores SIGTERM: the stop waits out the grace, then SIGKILL ends the group."""
    t = time.monotonic()
    await eng.stop(grace=1.0)
    assert time.monotonic() - t >= 1.0
    exits = [e for e in events if isinstance(e, Proc) and e.action == "exit"]
    assert exits[0].returncode == -signal.SIGKILL


async def run_steps(cls: type[Engine], cfg: RunConfig, plan: dict) -> tuple:
    """The real runner's whole step loop, on engine `cls` with the fault `plan`; it must end "ok".
    Returns the engine (for its recorded calls) and every event."""
    from sgtui.runner import __main__ as runner_main

    events: list = []
    runner = runner_main.Runner(cfg, events.append)
    await runner.engine.aclose()
    eng = cls(cfg, events.append, runner.workdir)
    eng.plan = plan
    runner.engine = eng
    try:
        assert await runner.execute() == "ok"
    finally:
        await runner.cleanup()
    return eng, events


def phase_spans(events: list) -> dict[tuple[int, str], list[float]]:
    """(step, phase) -> [start, end] times; every phase must have ended ok."""
    out: dict[tuple[int, str], list[float]] = {}
    for e in events:
        if isinstance(e, Phase):
            assert e.ok, e
            out.setdefault((e.step, e.name), []).append(e.t)
    return out


def assert_calls_in_their_phase(calls: list[dict], phases: dict, where: dict[str, str]) -> None:
    """Each recorded call to a path of `where` lies inside exactly one phase, the one `where` names (so a
    delay injected there is charged to that phase only), and every such path was called."""
    seen = set()
    for c in calls:
        if c["path"] in where:
            inside = [k for k, (a, b) in phases.items() if a <= c["t0"] and c["t1"] <= b]
            assert [k[1] for k in inside] == [where[c["path"]]], (c["path"], inside)
            seen.add(c["path"])
    assert seen == set(where)


def greedy_checks(calls: list[dict]) -> list[dict]:
    """The runner's adapter checks (greedy, 8 tokens), told apart from the rollouts by their sampling."""
    return [c for c in calls if c["path"] == "/v1/completions" and c["body"].get("temperature") == 0.0
            and c["body"].get("max_tokens") == 8]


def assert_outside_step_phases(calls: list[dict], phases: dict) -> None:
    """None of `calls` starts inside a timed phase of an RL step (step 0, start-up, is not timed)."""
    assert not any(a <= c["t0"] <= b for c in calls for (s, _n), (a, b) in phases.items() if s > 0)
