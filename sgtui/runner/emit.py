"""The runner's only output: one event JSON line per `os.write` on the real stdout.

At start the real stdout fd is duplicated to a private fd and fd 1 is pointed
at stderr, so nothing a library prints (vLLM, torch, transformers warnings)
can interleave with the event stream the orchestrator parses.

When the orchestrator dies (kill -9, OOM killer) the pipe breaks: nobody
records anything any more, so the runner is told (`on_closed`) and cancels
its run, stopping its engine and trainer, instead of benchmarking on with GPUs
held for nobody. A write notices at once; `watch` notices within a second
during phases that emit nothing (a long train step).
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
import threading

from typing import Callable

from sgtui.events import Event, encode


class Emitter:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.closed = False
        self.on_closed: Callable[[], None] | None = None

    @classmethod
    def take_stdout(cls) -> "Emitter":
        sys.stdout.flush()
        private = os.dup(1)
        os.dup2(2, 1)
        return cls(private)

    def peer_gone(self) -> bool:
        """The read end of our stdout pipe is closed (a pipe's write end polls POLLERR then)."""
        p = select.poll()
        p.register(self._fd, 0)
        return any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in p.poll(0))

    async def watch(self, interval: float = 1.0) -> None:
        while not self.closed:
            await asyncio.sleep(interval)
            if self.peer_gone():
                with self._lock:
                    self.closed = True
                if self.on_closed is not None:
                    self.on_closed()

    def __call__(self, event: Event) -> None:
        line = encode(event)
        with self._lock:
            if self.closed:
                return
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
            except BrokenPipeError:
                self.closed = True
                if self.on_closed is not None:
                    self.on_closed()
