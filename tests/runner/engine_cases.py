"""The two engines under test, each as the real engine class with its FAULT-INJECTION server swapped in,
and what differs between them where a test is otherwise the same for both (test_engine_common.py).

The engine-specific cases stay in test_vllm_engine.py and test_sglang_engine.py; they build their engines
from here too, so that every test drives the same classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sgtui.config import RunConfig
from sgtui.runner.engines.base import Engine
from sgtui.runner.engines.sglang import SglangEngine
from sgtui.runner.engines.vllm import ADAPTER_NAME, VllmEngine
from tests.runner import fault_harness as harness
from tests.runner.sglang_adapter_check import verify_adapter
from tests.runner.vllm_fault_server import ADAPTER_TEXT

HERE = Path(__file__).parent
VLLM_CONTROL = {"/sleep", "/wake_up", "/collective_rpc", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}
#: What SGLang's control_calls leave out: health, status, load polls and requests.
SGLANG_NOT_CONTROL = {"/health", "/health_generate", "/get_server_info", "/server_info", "/metrics", "/v1/completions",
                      "/v1/loads"}


class FaultVllm(harness.FaultServer, VllmEngine):
    """The real VllmEngine, with the fault-injection server in place of vLLM's api_server."""

    SERVER = HERE / "vllm_fault_server.py"
    MODULE = "vllm.entrypoints.openai.api_server"

    def control_calls(self) -> list[tuple]:
        """(path, query or body) of every control call, in order."""
        return [(c["path"], c["query"] if c["path"] in ("/sleep", "/wake_up") else c["body"])
                for c in self.calls() if c["path"] in VLLM_CONTROL]


class FaultSglang(harness.FaultServer, SglangEngine):
    """The real SglangEngine, with the fault-injection server in place of `sglang.launch_server`."""

    SERVER = HERE / "sglang_fault_server.py"
    MODULE = "sglang.launch_server"

    def control_calls(self) -> list[tuple[str, object]]:
        """(path, tags or body) of every control call, in order."""
        return [(c["path"], c["body"].get("tags") if "tags" in c["body"] else c["body"]) for c in self.calls()
                if c["path"] not in SGLANG_NOT_CONTROL]


def vllm_cfg(tmp_path: Path, **kw) -> RunConfig:
    return harness.make_cfg(tmp_path, **{"label": "vl", "backend": "vllm", "strategy": "sleep1", **kw})


def sglang_cfg(tmp_path: Path, **kw) -> RunConfig:
    return harness.make_cfg(tmp_path, **{"label": "sg", "backend": "sglang", "strategy": "release", **kw})


@dataclass(frozen=True)
class EngineCase:
    """One engine as a shared test sees it: how to build it, and the names and texts that differ."""

    name: str
    cls: type
    make_cfg: Callable[..., RunConfig]  # (tmp_path, **kw), with the engine's label, backend and default strategy
    offload_path: str  # the control call the default strategy's offload makes
    lora_flag: str  # the argv flag that preloads an adapter at start (restart sync)
    restarted_adapter: str  # the adapter's name when the server is restarted with it (its second start)
    restarted_model: str  # what requests then ask for
    oom_plan: dict  # the fault that runs out of memory when the offloaded engine is brought back
    oom_message: str | None  # how the failed call shows in the error (None: it races with the server's exit)
    oom_log: str  # what the server logs then
    oom_advice: str  # what the advice must name

    def engine(self, tmp_path: Path, plan: dict | None = None, **kw) -> tuple[Engine, list]:
        return harness.make_engine(self.cls, self.make_cfg(tmp_path, **kw), plan)

    async def assert_serves_adapter(self, eng: Engine) -> None:
        """The server answers the request model with the adapter's text, not the base model's."""
        code, doc = await harness.complete(eng, eng.request_model())
        assert code == 200 and doc["choices"][0]["text"] == ADAPTER_TEXT[:8]
        if isinstance(eng, SglangEngine):  # and SGLang's name check against its base model's output
            assert await verify_adapter(eng, "p") == f"{eng.request_model()} differs from the base model"


VLLM = EngineCase("vllm", FaultVllm, vllm_cfg, offload_path="/sleep", lora_flag="--lora-modules",
                  restarted_adapter=ADAPTER_NAME, restarted_model=ADAPTER_NAME, oom_plan={"wake_oom": True},
                  oom_message="/wake_up answered 500", oom_log="CUDA out of memory",
                  oom_advice="gpu-memory-utilization")
SGLANG = EngineCase("sglang", FaultSglang, sglang_cfg, offload_path="/release_memory_occupation",
                    lora_flag="--lora-paths", restarted_adapter="policy-2", restarted_model="policy:policy-2",
                    oom_plan={"resume_oom": True}, oom_message=None,
                    oom_log="CUDA_ERROR_OUT_OF_MEMORY", oom_advice="resum")
CASES = [VLLM, SGLANG]

