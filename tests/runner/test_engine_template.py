"""The step's transitions as the base engine sequences them, on an engine that only records its own calls:
what each strategy does, the order of a staged wake-up, and when the base weights are read again."""

from __future__ import annotations

import pytest

from sgtui.config import RunConfig
from sgtui.runner.engines.base import Engine, Wake


class Recorder(Engine):
    """An engine whose transitions record themselves instead of calling a server."""

    backend = "rec"

    def __init__(self, tmp_path, staged: bool = False, discarded: bool = False, nothing: str = "", **kw) -> None:
        super().__init__(RunConfig(label="r", backend="vllm", **kw), lambda e: None, tmp_path)
        self.calls: list[str] = []
        self._staged, self._discarded, self._nothing = staged, discarded, nothing

    def server_argv(self, adapter_dir=None):
        return []

    def server_env(self):
        return {}

    async def start(self, adapter_dir=None):
        self.calls.append(f"start {adapter_dir}")
        return "started"

    async def stop(self, grace=15.0):
        self.calls.append("stop")

    async def release(self):
        self.calls.append("release")
        return "released"

    def nothing_released(self):
        return self._nothing

    def staged_wake(self):
        return self._staged

    def weights_discarded(self):
        return self._discarded

    async def wake(self, what: Wake):
        self.calls.append(f"wake {what}")
        return what

    async def reload_base_weights(self):
        self.calls.append("reread")
        return "reread"

    async def woken(self, parts):
        self.calls.append("woken")
        return "+".join(parts)

    async def hot_sync(self, adapter_dir, step):
        self.calls.append(f"hot {adapter_dir}")
        return "hot"

    async def scrape(self):
        return {}


async def test_keep_does_nothing(tmp_path):
    eng = Recorder(tmp_path, strategy="keep")
    assert await eng.offload() == "keep: engine stays resident"
    assert await eng.reload("/a") == "keep: nothing to reload"
    assert await eng.sync_weights("/a", 1) == "hot"
    assert eng.calls == ["hot /a"]


@pytest.mark.parametrize("sync, started_with", [("restart", "/a"), ("lora", None)])
async def test_restart_stops_then_starts_with_the_adapter_only_for_a_restart_sync(tmp_path, sync, started_with):
    eng = Recorder(tmp_path, strategy="restart", sync=sync)
    assert await eng.offload() == "server stopped (process group)"
    assert await eng.reload("/a") == "started" + (" with new adapter" if started_with else "")
    detail = await eng.sync_weights("/a", 1)
    assert detail == ("included in reload (server restarted with the new adapter)" if sync == "restart" else "hot")
    assert eng.calls == ["stop", f"start {started_with}"] + ([] if sync == "restart" else ["hot /a"])


async def test_restart_sync_under_an_in_place_offload_restarts_in_the_sync(tmp_path):
    eng = Recorder(tmp_path, strategy="sleep1", sync="restart")
    await eng.offload()
    await eng.reload("/a")
    assert await eng.sync_weights("/a", 1) == "server restarted with the new adapter"
    assert eng.calls == ["release", "wake all", "woken", "stop", "start /a"]


@pytest.mark.parametrize("staged, discarded, sync, calls", [
    (False, False, "lora", ["wake all"]),
    (False, True, "lora", ["wake all", "reread"]),
    (True, True, "lora", ["wake weights", "reread", "wake rest"]),
    (True, True, "disk", ["wake weights", "wake rest"]),  # the full sync brings the weights
    (True, False, "lora", ["wake weights", "wake rest"]),
])
async def test_wake_up_order(tmp_path, staged, discarded, sync, calls):
    eng = Recorder(tmp_path, staged=staged, discarded=discarded, strategy="sleep2", sync=sync)
    assert await eng.offload() == "released"
    assert await eng.reload(None) == "+".join(c.split()[-1] for c in calls)
    assert eng.calls == ["release", *calls, "woken"]


async def test_nothing_released_wakes_nothing(tmp_path):
    eng = Recorder(tmp_path, nothing="nothing released", strategy="release")
    assert await eng.reload(None) == "nothing released"
    assert eng.calls == []
