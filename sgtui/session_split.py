"""Read a large session in two parts at once: a helper process decodes its tail while this one decodes its head.

Why: decoding a line (orjson, then validation into its event dataclass) costs ~3x the bare `orjson.loads`,
and the GIL keeps it on one core: a 1M-event session (700 MiB) took 5.5 s of the 2-core CI box to read
before a replay could show it. Here a helper process (`python -m sgtui.session`) decodes the last
TAIL_SHARE of the file with the same decoder and hands its events back pickled (`sgtui.events` pickles an
event as its class and its field values, ITL gaps as bytes), which this process loads at ~1 us an event
instead of ~5.6 to decode: the two parts end together and the read takes ~2/3 of the time
(benchmarks/replay_load.py).

Whatever goes wrong with the helper (it cannot start, dies, writes nothing, finds a line only this process
may judge, such as a newer schema) makes the caller decode the tail itself: the result is always the same
as a read in one part, only its time differs. The helper runs in a process group of its own, which `close`
ends (`childproc.stop_group`), and it dies with its caller (`childproc.die_with_parent`): no orphan. It
writes into a temporary file that has no name from the start (`tempfile.TemporaryFile`, its descriptor
passed down): hundreds of MB that nothing can leave behind in /tmp, not even a caller killed mid-read.
Standard library only (and `sgtui.childproc`): the core reads sessions without numpy, torch or an engine.
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from sgtui.childproc import die_with_parent, parent_death_signal, stop_group

#: Files smaller than this are read in one part: the helper's start (~0.15 s) would not pay for itself.
SPLIT_MIN = 48 << 20
#: The share of the file the helper decodes: it also pickles what it decoded (~0.4 of decoding) while this
#: process loads it afterwards (~0.2), so the parts end together at about 40 / 60.
TAIL_SHARE = 0.4
#: Set to "0" to read in one part (a machine whose second core is busy with something being measured).
ENV = "SGTUI_SPLIT_READ"
#: Seconds the helper may take beyond the head's decoding before it is given up (and the tail read here).
WAIT_S = 120.0
GRACE_S = 1.0
#: How every session sgtui writes begins (`events.encode` puts the kind first): a large file that does not
#: (a binary file, another JSON log) is read in one part, to be refused without starting a helper.
HEADER = b'{"kind":"session"'


def split_point(f: BinaryIO) -> int | None:
    """The byte offset of the first line of the tail the helper decodes; None: read in one part (a small file,
    one core, splitting switched off, or no line break in the last part)."""
    size = os.fstat(f.fileno()).st_size
    if size < SPLIT_MIN or (os.cpu_count() or 1) < 2 or os.environ.get(ENV) == "0":
        return None
    if f.read(len(HEADER)) != HEADER:  # not a session as sgtui writes them: no helper for what is refused
        f.seek(0)
        return None
    f.seek(int(size * (1 - TAIL_SHARE)))
    f.readline()  # on to the start of the next line
    at = f.tell()
    f.seek(0)
    return at if at < size else None


class HeadLines:
    """The lines of an open file up to byte `end` (which starts a line), counted as they go."""

    def __init__(self, f: BinaryIO, end: int) -> None:
        self.f, self.end, self.lines = f, end, 0

    def __iter__(self) -> Iterator[bytes]:
        left = self.end
        for raw in self.f:
            self.lines += 1
            yield raw
            left -= len(raw)
            if left <= 0:
                return


class TailDecoder:
    """The helper process decoding the file from byte `start` on; `result` waits for its events."""

    def __init__(self, path: Path, start: int) -> None:
        self._out = tempfile.TemporaryFile(prefix="sgtui-read-")  # no name: freed when both have closed it
        fd = self._out.fileno()
        self.proc: subprocess.Popen | None = None
        # the helper imports this very sgtui, wherever it came from (an install, or a checkout on sys.path)
        here = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "sgtui.session", str(path), str(start), str(fd)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(fd,),
                                         stderr=subprocess.DEVNULL, start_new_session=True, env=env,
                                         preexec_fn=die_with_parent if parent_death_signal() else None)
        except OSError:  # cannot start one: the caller reads the tail itself
            self.proc = None

    def result(self, timeout: float = WAIT_S) -> tuple[list, list[tuple[int, str]], bool] | None:
        """(events, problems with line numbers counted from the tail's first line, truncated), or None when
        the helper gave nothing (the caller then decodes the tail itself)."""
        if self.proc is None:
            return None
        try:
            if self.proc.wait(timeout) != 0:
                return None
        except subprocess.TimeoutExpired:
            return None
        was_enabled = gc.isenabled()
        gc.disable()  # a million new objects without cycles: no collection needs to walk them
        try:
            with mmap.mmap(self._out.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return pickle.loads(m)  # from the page cache in one go: `pickle.load(f)` reads it in small pieces
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError):
            return None
        finally:
            if was_enabled:
                gc.enable()

    def close(self) -> None:
        """End the helper's process group if it still runs, and free its file."""
        p = self.proc
        if p is not None and p.poll() is None:
            stop_group(p.pid, GRACE_S, p)
        self._out.close()


def main(argv: list[str], decode: Callable[[BinaryIO, Path], tuple]) -> int:
    """The helper (`python -m sgtui.session PATH START FD`, which passes its decoder: no import cycle):
    decode PATH from byte START on, pickle (events, problems, truncated) into the open file FD. Exit 0 only
    when FD holds all of it; 3 for anything else, such as a line only the caller may judge (it then decodes
    the tail)."""
    path, start, fd = Path(argv[0]), int(argv[1]), int(argv[2])
    gc.disable()
    try:
        with path.open("rb") as f:
            f.seek(start)
            decoded = decode(f, path)
    except Exception:  # noqa: BLE001 - the caller decodes the tail itself and says what is wrong
        return 3
    with os.fdopen(fd, "wb") as o:
        pickle.dump(decoded, o, protocol=pickle.HIGHEST_PROTOCOL)
    return 0
