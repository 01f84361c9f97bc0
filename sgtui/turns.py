"""The `--interleave` turn protocol between the orchestrator and its runners (no torch: both sides use it).

Runs recorded one after the other absorb whatever else the machine does
meanwhile (issue 13: SGLang at 67 tok/s beside a background job, 937 tok/s on
the idle box), and concurrent runs measure each other. Interleaved, the runs
of a session take turns, one step each, so slow drift hits every run alike:

    orchestrator -> runner (its stdin):  b"turn N\\n"   N = 0 (setup), then 1..num_steps
    runner -> orchestrator (stdout):     the turn's events, ending with the end edge of the run's
                                         `park` phase (step 0), or with run_end after its last step

Turn 0 is the setup (trainer start, engine startup, warmup, adapter check), so
engines start one at a time instead of competing. A runner parks after every
turn but its last: its strategy's own offload (vLLM sleep, SGLang release,
restart: server stopped; keep: nothing), so its engine is idle and out of the
other engine's memory; at its next turn it unparks (its reload) before the
step. Park and unpark are step-0 phases: untimed, outside every step's numbers.
The orchestrator hands the next turn only once the last one ended (park end,
run_end, or the runner's exit), so one run at a time is inside a step; a runner
that failed or crashed gets no more turns and the others go on alone. EOF on
stdin means no turn will come (the orchestrator stopped handing them out): the
runner ends its run as cancelled.
"""

from __future__ import annotations

import asyncio
import sys

PARK = "park"
UNPARK = "unpark"


class NoTurn(Exception):
    """stdin closed before the expected turn came: the orchestrator gives no more turns."""


class ProtocolError(Exception):
    """A line on stdin that is not the expected turn."""


def turn_line(n: int) -> bytes:
    return b"turn %d\n" % n


def parse_turn(line: bytes) -> int:
    parts = line.split()
    if len(parts) != 2 or parts[0] != b"turn" or not parts[1].isdigit():
        raise ProtocolError(f"expected 'turn N' on stdin, got {line[:80]!r}")
    return int(parts[1])


class Turns:
    """The runner's side: `await turns.wait(n)` returns when the orchestrator hands turn n."""

    def __init__(self, stream=None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self._reader: asyncio.StreamReader | None = None

    async def _open(self) -> asyncio.StreamReader:
        if self._reader is None:
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self._stream)
            self._reader = reader
        return self._reader

    async def wait(self, n: int) -> None:
        reader = await self._open()
        line = await reader.readline()  # cancellable (SIGTERM cancels the run while it waits)
        if not line:
            raise NoTurn(f"no turn {n}: the orchestrator closed the turn channel")
        got = parse_turn(line)
        if got != n:
            raise ProtocolError(f"expected turn {n}, got turn {got}")
