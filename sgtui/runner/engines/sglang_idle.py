"""SGLang's idle guard: memory is released (and a serving engine's weights reloaded) only once its scheduler is
fully idle.

SGLang *asserts* that nothing is in flight when releasing, and a failed
assertion kills the whole server, so the guard waits until the server itself
(its scheduler, via /v1/loads; /get_load before 0.5) reports no running or
queued request: our own client being done is not enough (a request the client
gave up on can still run there); then until its /flush_cache succeeds, which
the scheduler does only when fully idle (its last batch lingers a moment after
the last request). The same wait comes before a full-weight reload from disk,
whose cache flush SGLang refuses (400) until then.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import httpx

from sgtui.config import RunConfig
from sgtui.runner.engines.base import EngineError


@dataclass
class IdleGuard:
    """Asks one SGLang server's scheduler how busy it is, and waits for it to be fully idle."""

    client: httpx.AsyncClient  # the engine's
    cfg: RunConfig  # its --server-timeout bounds each query and the whole wait
    tail: Callable[[], list[str]]  # the server log's tail, for an error
    scrape: Callable[[], Awaitable[dict[str, float]]]  # the /metrics gauges: the last resort for the load
    crashed: Callable[[], Awaitable[None]]  # raises when the server is down (after a query failed)
    load_path: str | None = None  # /v1/loads, /get_load or "" (metrics only); None: not probed yet

    async def load(self) -> tuple[float, float]:
        """(running, waiting) requests as the scheduler itself sees them right now.

        /v1/loads (0.5.x; /get_load before) asks the scheduler; the `sglang:` gauges of /metrics are only
        refreshed at its logging intervals (seen: 1 running in /metrics while /v1/loads said 16), so
        they are the last resort, for servers that have neither.
        """
        timeout = self.cfg.server_timeout
        if self.load_path is None:
            self.load_path = ""
            for path in ("/v1/loads", "/get_load"):
                r = await self.client.get(path, params={"include": "core"} if path == "/v1/loads" else None,
                                          timeout=timeout)
                if r.status_code == 200:
                    self.load_path = path
                    return loads(r.json())
        if self.load_path:
            params = {"include": "core"} if self.load_path == "/v1/loads" else None
            r = await self.client.get(self.load_path, params=params, timeout=timeout)
            if r.status_code == 200:
                return loads(r.json())
            raise EngineError("SERVER_CRASH", f"sglang {self.load_path} answered {r.status_code}", self.tail())
        g = await self.scrape()
        return g.get("running", 0.0), g.get("waiting", 0.0)

    async def wait(self, timeout: float | None = None) -> float:
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
                running, waiting = await self.load()
                if running == 0 and waiting == 0:
                    r = await self.client.post("/flush_cache", timeout=self.cfg.server_timeout)
                    if r.status_code == 200:
                        return time.monotonic() - t0
                    if r.status_code != 400:
                        raise EngineError("SERVER_CRASH", f"sglang /flush_cache answered {r.status_code}: "
                                          f"{r.text[:200]}", self.tail())
            except httpx.HTTPError as e:
                await self.crashed()
                raise EngineError("SERVER_CRASH", f"sglang load query failed: {type(e).__name__}: {e}",
                                  self.tail()) from None
            if time.monotonic() > deadline:
                busy = (f"still has {running:.0f} running and {waiting:.0f} queued requests" if running or waiting
                        else "reports no request, but its scheduler is not fully idle (/flush_cache refused)")
                raise EngineError("SERVER_TIMEOUT", f"sglang {busy} after {limit:.0f} s; memory cannot be released "
                                  "while it works", self.tail(), "raise --server-timeout, or lower --max-output-tokens")
            await asyncio.sleep(0.02)


def loads(doc) -> tuple[float, float]:
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
