"""The runner's only output: one event JSON line per `os.write` on the real stdout.

At start the real stdout fd is duplicated to a private fd and fd 1 is pointed
at stderr, so nothing a library prints (vLLM, torch, transformers warnings)
can interleave with the event stream the orchestrator parses.
"""

from __future__ import annotations

import os
import sys
import threading

from sgtui.events import Event, encode


class Emitter:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.closed = False

    @classmethod
    def take_stdout(cls) -> "Emitter":
        sys.stdout.flush()
        private = os.dup(1)
        os.dup2(2, 1)
        return cls(private)

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
                # The orchestrator is gone; keep running to clean up our children.
                self.closed = True
