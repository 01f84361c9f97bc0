"""Read a large session in two parts at once: a helper process decodes its tail while this one decodes its head.

Why: decoding a line (orjson, then validation into its event dataclass) costs ~3x the bare `orjson.loads`,
and the GIL keeps it on one core: a 1M-event session (700 MiB) took 5.5 s of the 2-core CI box to read
before a replay could show it. Here a helper process (`python -m sgtui.session`) decodes the last
TAIL_SHARE of the file with the same decoder and hands its events back pickled in columns
(`sgtui.events.pack_events`: pickled one by one, each event cost a Python call both ways, and the replay
settled 1.3x later), which this process loads at ~1 us an event instead of ~5.6 to decode: the two parts
end together and the read takes ~2/3 of the time (benchmarks/replay_load.py).

The helper hands its events over in pieces as it decodes them (PIECE_LINES lines each): this process loads
the pieces written meanwhile once its head is decoded, then each next one as it comes, so that the helper's
pickling and this process's loading overlap. Asked to (`reduce`: a replay, whose summaries reduce every
step's requests), the helper goes on once the events are handed over and reduces the requests of the tail's
steps as well (`sgtui.state.steps.reduce_tail`), on the core that is otherwise idle while this process folds;
the steps folded here from the very same requests adopt them (`adopt_reductions`). It says what it wrote,
one byte each on a pipe of their own: b"c" a piece of events, b"e" their end, b"s" the reductions; and it exits
without tearing its million objects down (`os._exit`): the caller waits for its words, never for its exit.

Whatever goes wrong with the helper (it cannot start, dies, writes nothing, finds a line only this process
may judge, such as a newer schema) makes the caller decode the tail itself: the result is always the same
as a read in one part, only its time differs. The helper runs in a process group of its own, which `close`
ends (`childproc.stop_group`), and it dies with its caller (`childproc.die_with_parent`): no orphan. It
writes into a temporary file that has no name from the start (`tempfile.TemporaryFile`, its descriptor
passed down): hundreds of MB that nothing can leave behind in /tmp, not even a caller killed mid-read.
Standard library only (and `sgtui.childproc`, `sgtui.gcpause`): the core reads sessions without numpy, torch
or an engine.
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import select
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from sgtui.childproc import die_with_parent, parent_death_signal, stop_group
from sgtui.gcpause import gc_paused

#: Files smaller than this are read in one part: the helper's start (~0.15 s) would not pay for itself.
SPLIT_MIN = 48 << 20
#: The share of the file the helper decodes: it also pickles what it decoded (~0.4 of decoding) while this
#: process loads it (~0.2), now piece by piece as it comes (PIECE_LINES), so the parts end together at about
#: 45 / 55 (benchmarks/replay_load.py --baseline, 4 alternated rounds: 0.45 settled 0.95x the time of 0.4 by
#: the median, 0.5 1.10x).
TAIL_SHARE = 0.45
#: Set to "0" to read in one part (a machine whose second core is busy with something being measured).
ENV = "SGTUI_SPLIT_READ"
#: Lines the helper decodes and hands over at a time (~45 MB of file, ~7 pieces of a 1M-event session's tail):
#: the caller loads the pieces already written as soon as its head is decoded, and each next one as it comes,
#: instead of all of them after the helper's last (its pickling and this process's loading overlap).
PIECE_LINES = 60_000
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
    """The helper process decoding the file from byte `start` on; `result` waits for its events, `reductions`
    gives the tail's steps reduced (with `reduce`) once the helper has sent them."""

    def __init__(self, path: Path, start: int, reduce: bool = False) -> None:
        self._out = tempfile.TemporaryFile(prefix="sgtui-read-")  # no name: freed when both have closed it
        self._reduced = tempfile.TemporaryFile(prefix="sgtui-reduced-") if reduce else None
        self._words, say = os.pipe()  # the helper's words, on a pipe of their own (not its stdout: no stray print)
        fds = (say, *(f.fileno() for f in (self._out, self._reduced) if f is not None))
        self.proc: subprocess.Popen | None = None
        self._said = b""  # what the helper has said it wrote, one byte each
        self._heard = 0  # how much of it `result` has taken
        self.ended = False  # it will say nothing more (exited, or its reductions taken)
        # the helper imports this very sgtui, wherever it came from (an install, or a checkout on sys.path): run
        # from there (`-m` puts its working directory first on sys.path, ahead of PYTHONPATH: run from another
        # checkout, it imported that one's sgtui, whose helper may speak another protocol); PYTHONPATH still
        # names it for a Python that adds no working directory (PYTHONSAFEPATH)
        here = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
        try:
            argv = [sys.executable, "-m", "sgtui.session", os.path.abspath(path), str(start), str(PIECE_LINES),
                    *map(str, fds)]
            self.proc = subprocess.Popen(argv, cwd=here,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=fds,
                                         stderr=subprocess.DEVNULL, start_new_session=True, env=env,
                                         preexec_fn=die_with_parent if parent_death_signal() else None)
        except OSError:  # cannot start one: the caller reads the tail itself
            self.proc = None
            self.ended = True
        finally:
            os.close(say)  # the helper's copy only: its end (or death) closes the pipe

    def _listen(self, timeout: float) -> bool:
        """Take what the helper says next (a byte a word), waiting up to `timeout` seconds; False when it said
        nothing meanwhile, or has ended."""
        if self.ended or not select.select([self._words], [], [], max(0.0, timeout))[0]:
            return False
        got = os.read(self._words, 64)
        if not got:  # it ended: it will say nothing more
            self.ended = True
        self._said += got
        return bool(got)

    def _wrote(self, what: bytes, timeout: float) -> bool:
        """Has the helper said (within `timeout` seconds) that it wrote `what`?"""
        deadline = time.monotonic() + timeout
        while what not in self._said and self._listen(deadline - time.monotonic()):
            pass
        return what in self._said

    def _next(self, timeout: float) -> bytes:
        """The helper's next word (b"c" a piece of events, b"e" their end) within `timeout`; b"" if none."""
        deadline = time.monotonic() + timeout
        while len(self._said) <= self._heard:
            if not self._listen(deadline - time.monotonic()):
                return b""
        self._heard += 1
        return self._said[self._heard - 1:self._heard]

    def result(self, unpack: Callable[[Any], list], timeout: float = WAIT_S
               ) -> tuple[list, list[tuple[int, str]], bool] | None:
        """(events, problems with line numbers counted from the tail's first line, truncated), or None when
        the helper gave nothing (the caller then decodes the tail itself). The pieces are loaded as they come:
        the ones the helper has written while this process decoded the head, then each as it is written."""
        events: list = []
        at = 0
        deadline = time.monotonic() + timeout
        while (word := self._next(max(0.0, deadline - time.monotonic()))) in (b"c", b"e"):
            got, at = _piece(self._out, at)
            if got is None:
                return None
            if word == b"e":
                self._out.close()  # its pieces are loaded: the file's hundreds of MB go now, not with the helper
                return events, *got
            try:
                with gc_paused():
                    events += unpack(got)
            except (TypeError, ValueError, IndexError):  # not what was packed: the tail is decoded here instead
                return None
        return None

    def reductions(self) -> Any:
        """The tail's steps reduced, once the helper has said it wrote them (then it is done and closed), else
        None: not yet (`ended` False), or never (the helper failed: the caller reduces them itself)."""
        if self._reduced is None or not self._wrote(b"s", 0.0):
            return None
        got, _ = _piece(self._reduced, 0)
        self.close()
        return got

    def close(self) -> None:
        """End the helper's process group if it still runs, and free its files."""
        self.ended = True
        p = self.proc
        if p is not None:
            if p.poll() is None:
                stop_group(p.pid, GRACE_S, p)
        if self._words >= 0:
            os.close(self._words)
            self._words = -1
        for f in (self._out, self._reduced):
            if f is not None:
                f.close()


def _piece(f: BinaryIO, at: int) -> tuple[Any, int]:
    """The pickled piece at byte `at` of f (its length, 8 bytes, then its pickle: `_say`) and where the next
    begins; None for one that cannot be read."""
    try:
        size = int.from_bytes(os.pread(f.fileno(), 8, at), "little")
        with gc_paused(), mmap.mmap(f.fileno(), at + 8 + size, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)[at + 8:at + 8 + size]
            try:  # loaded from the page cache in place
                return pickle.loads(view), at + 8 + size
            finally:
                view.release()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError):
        return None, at


def _say(o: BinaryIO, words: int, word: bytes, obj: Any) -> None:
    """The helper's side of `_piece`: obj pickled into o (its length first), then `word` said on the pipe."""
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    o.write(len(blob).to_bytes(8, "little"))
    o.write(blob)
    o.flush()
    os.write(words, word)


def main(argv: list[str], decode: Callable[[list[bytes], Path, int], tuple], reduce: Callable[[list], Any],
         pack: Callable[[list], Any]) -> int:
    """The helper (`python -m sgtui.session PATH START LINES SAY FD [FD2]`, which passes its decoder, reducer and
    packer: no import cycle): decode PATH from byte START on, LINES lines at a time (PIECE_LINES), each piece's
    events packed (`sgtui.events.pack_events`: `result` unpacks them) and pickled into the open file FD (its
    length first) with b"c" said on the pipe SAY, then (problems, truncated) with b"e"; with FD2,
    `reduce(events)` likewise, saying b"s". Exit 0 only when all of it was written; 3 for anything else, such
    as a line only the caller may judge (it then decodes the tail itself)."""
    path, start, piece, words, fd = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    gc.disable()
    events: list = []
    problems: list = []
    truncated = False
    with os.fdopen(fd, "wb") as o:
        try:
            with path.open("rb") as f:
                f.seek(start)
                lineno = 1
                while not truncated and (lines := list(islice(f, piece))):
                    got, bad, truncated = decode(lines, path, lineno)
                    _say(o, words, b"c", pack(got))  # the caller loads it while this goes on
                    events += got
                    problems += bad
                    lineno += len(lines)
        except Exception:  # noqa: BLE001 - the caller decodes the tail itself and says what is wrong
            return 3
        _say(o, words, b"e", (problems, truncated))
    if len(argv) > 5:
        try:
            reduced = reduce(events)
        except Exception:  # noqa: BLE001 - the caller reduces the tail's steps itself
            return 3
        with os.fdopen(int(argv[5]), "wb") as o:
            _say(o, words, b"s", reduced)
    return 0
