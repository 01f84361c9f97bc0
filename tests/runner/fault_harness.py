"""What the vLLM and SGLang engine tests share: a run config, the real engine class with a
FAULT-INJECTION server swapped in for the engine's module, and the checks on what is left behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import pytest

from sgtui.config import RunConfig
from sgtui.events import Proc
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
