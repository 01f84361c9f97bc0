"""Session files: write (append, one flushed line per event) and read (tolerant).

A session file is the only link between a run and everything shown about it
later (replay, reports, `sgtui attach` after an SSH drop), so the writer
favours durability (one `os.write` per line, no user-space buffer: a crash
loses at most the line being written) and the reader favours recovery
(a truncated tail or a bad line never hides the rest of the file).
No Textual here: the UI gets state snapshots built from what this reads.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson

from sgtui import __version__, session_split
from sgtui.events import (PLAIN_BUILDERS, SCHEMA, Event, EventError, SchemaTooNew, SessionHeader, decode, encode,
                          pack_events, unpack_events)
from sgtui.gcpause import gc_paused

# Names of secrets, not of counts: "HF_TOKEN", "--hf-token", "api_key", but not "max_output_tokens".
_SECRET_NAME = re.compile(r"(token(?!s)|secret|passw(or)?d|api[_-]?key|credential|auth(?!or))", re.IGNORECASE)
REDACTED = "<redacted>"


def redact(obj: Any) -> Any:
    """Drop values whose key names look like secrets (HF_TOKEN, OPENAI_API_KEY, ...), recursively.

    Session files get shared (PR comments, bug reports); env and flags copied
    into a header must never carry credentials.
    """
    if isinstance(obj, dict):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_NAME.search(k) and v else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        out = []
        hide_next = False
        for item in obj:
            if hide_next:
                out.append(REDACTED)
                hide_next = False
                continue
            if isinstance(item, str) and item.startswith("--") and _SECRET_NAME.search(item):
                if "=" in item:
                    item = item.split("=", 1)[0] + "=" + REDACTED
                else:
                    hide_next = True
            elif isinstance(item, str) and "=" in item and _SECRET_NAME.search(item.split("=", 1)[0]):
                item = item.split("=", 1)[0] + "=" + REDACTED
            out.append(redact(item))
        return out
    return obj


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "session"


def new_session_path(directory: Path | str, labels: Iterable[str], now: float | None = None) -> Path:
    """`<dir>/<UTC time>-<labels>.jsonl`; never the name of an existing file."""
    directory = Path(directory)
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = f"{stamp}-{_slug('_vs_'.join(labels))}"
    path = directory / f"{base}.jsonl"
    n = 2
    while path.exists():
        path = directory / f"{base}-{n}.jsonl"
        n += 1
    return path


def make_header(argv: list[str], config: dict[str, Any], session_id: str = "", now: float | None = None,
                gpu_interval_s: float = 0.0) -> SessionHeader:
    t = now if now is not None else time.time()
    return SessionHeader(
        t=t,
        schema=SCHEMA,
        id=session_id or os.urandom(6).hex(),
        created=datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        argv=redact(list(argv)),
        config=redact(config),
        sgtui_version=__version__,
        pid=os.getpid(),
        gpu_interval_s=gpu_interval_s,
    )


class SessionWriter:
    """Append-only writer. The file is created exclusively (never overwrites) with mode 0600."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self.count = 0

    def write(self, event: Event) -> None:
        self.write_raw(encode(event))

    def write_raw(self, line: bytes) -> None:
        """Write one already-encoded line (newline included). Raises OSError (disk full, ...) to the caller."""
        if self._fd is None:
            raise ValueError(f"session {self.path} is closed")
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.count += 1

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "SessionWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ReadResult:
    """What a tolerant read gives back: the events that decoded and what was wrong with the rest."""

    path: Path
    header: SessionHeader | None
    events: list[Event]
    problems: list[str] = field(default_factory=list)  # one line each, "file:line: why"
    truncated_tail: bool = False
    #: with `reduce_tail`: the helper that decoded the file's tail, reducing its steps' requests meanwhile
    #: (`TailDecoder.reductions`), and the index in `events` of the tail's first event; the caller closes it
    tail: session_split.TailDecoder | None = None
    tail_start: int = 0


class SessionReadError(Exception):
    """A session that cannot be read at all (missing, not a session, newer schema)."""


class SessionEmpty(SessionReadError):
    """No complete line yet (an empty file, or only a partial first line): refused by a plain read, but a
    session being written right now looks like this for a moment, so followers may catch it and wait."""


#: What a session file is, for the one-line refusal of anything else.
EXPECTED = "expected an sgtui session: JSON lines, the first a 'session' event"


def decode_lines(data: bytes, path: Path, first_lineno: int = 1) -> tuple[list[Event], list[str]]:
    """Decode complete lines (data must end at a line break or be whole); bad lines become problems."""
    events, problems, _ = _decode(data.split(b"\n"), path, first_lineno, partial_tail=False)
    return events, _said(path, problems)


def _said(path: Path, problems: list[tuple[int, str]]) -> list[str]:
    """Problems as the reader reports them: "file:line: why"."""
    return [f"{path}:{lineno}: {why}" for lineno, why in problems]


def read_session(path: Path | str, *, allow_empty: bool = False, reduce_tail: bool = False) -> ReadResult:
    """Read a whole session, possibly still being written.

    A last line without a newline is a write in progress (or a crash mid-line):
    it is ignored with a single warning. Other bad lines are reported by number
    and skipped; the rest loads. A file holding no sgtui event at all (empty,
    binary, JSON of something else) raises SessionReadError, one line naming the
    file and what was expected; with `allow_empty` (a follower, whose session may
    not have its header on disk yet) a file without a complete line reads as no events.

    Lines are decoded as the file is read, one at a time (never the whole file and all its lines in
    memory at once: a 700 MiB session would hold three copies before its first event). With `reduce_tail`
    (a replay), the helper that decodes a large file's tail stays to reduce its steps' requests
    (`ReadResult.tail`).
    """
    path = Path(path)
    try:
        events, problems, truncated, tail = _read(path, reduce_tail)
    except OSError as e:
        raise _unreadable(path, e) from None
    problems = _said(path, problems)
    header = events[0] if events and isinstance(events[0], SessionHeader) else None
    if header is None and tail is not None:
        tail[0].close()
    if header is None and events:
        raise _not_first(path, events[0])
    if header is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise _unreadable(path, e) from None
        _refuse_headerless(path, data, problems, truncated, allow_empty)
    return ReadResult(path=path, header=header, events=events, problems=problems, truncated_tail=truncated,
                      tail=tail[0] if tail else None, tail_start=tail[1] if tail else 0)


#: Bytes `check_session` reads: a header line is a few KiB (argv, config); its first MiB holds the first event.
PEEK = 1 << 20


def check_session(path: Path | str, *, allow_empty: bool = False) -> None:
    """Raise SessionReadError for what `read_session` refuses (missing, not a session, a newer schema on its
    first lines), reading only the file's first MiB: `sgtui replay` refuses a bad file before any screen
    opens, and then the UI reads the file once. It used to read and fold every session whole for that check
    and throw the result away (a 1M-event session: ~7 s before the UI began its own read of the same file).
    Bad lines further on are the UI's to report, as problems, like any read's."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(PEEK + 1)
    except OSError as e:
        raise _unreadable(path, e) from None
    end = head.rfind(b"\n", 0, PEEK) if len(head) > PEEK else -1
    if end > 0:
        events, _ = decode_lines(head[:end], path)
        if events:
            if not isinstance(events[0], SessionHeader):
                raise _not_first(path, events[0])
            return
    read_session(path, allow_empty=allow_empty)  # a small file, or no event in its first MiB: read it whole


def _unreadable(path: Path, e: OSError) -> SessionReadError:
    if isinstance(e, FileNotFoundError):
        return SessionReadError(f"{path}: no such session file")
    return SessionReadError(f"{path}: cannot read ({e.strerror})")


def _not_first(path: Path, first: Event) -> SessionReadError:
    return SessionReadError(f"{path}: not an sgtui session (first event is {first.kind!r}, expected 'session')")


def _read(path: Path, reduce_tail: bool = False
          ) -> tuple[list[Event], list[tuple[int, str]], bool, tuple[session_split.TailDecoder, int] | None]:
    """(events, problems, truncated, tail) of a whole file: a large one in two parts at once, its tail decoded
    by a helper process meanwhile (`sgtui.session_split`), the same result in ~2/3 of the time. With
    `reduce_tail` the helper is left reducing the tail's steps: (it, the tail's first index in events)."""
    with path.open("rb") as f:
        split = session_split.split_point(f)
        if split is None:
            return *_decode(f, path), None
        helper = session_split.TailDecoder(path, split, reduce_tail)
        kept = None
        if reduce_tail:
            _numpy()
        try:
            head = session_split.HeadLines(f, split)
            events, problems, _ = _decode(head, path, partial_tail=False)
            tail = helper.result(unpack_events)
            if tail is not None and reduce_tail:
                kept = helper, len(events)
        finally:
            if kept is None:
                helper.close()
        first = head.lines + 1
        if tail is None:  # the helper failed: the tail decoded here after all (same result, slower)
            f.seek(split)
            tail = _decode(f, path, first)
        else:
            tail = (tail[0], [(first + n - 1, why) for n, why in tail[1]], tail[2])
    events.extend(tail[0])
    return events, problems + tail[1], tail[2], kept


def _numpy() -> None:
    """Import numpy, which a replay's reductions load next (`sgtui.state.bulk`), as the helper starts: ~0.15 s
    here, often while the head would wait for the helper anyway, instead of 0.3-0.6 s in the summaries worker
    beside the fold that needs the same GIL (measured in-app, 2026-12-06)."""
    from sgtui.state import bulk

    bulk.numpy()


def _decode(lines: Iterable[bytes], path: Path, first_lineno: int = 1, *, partial_tail: bool = True
            ) -> tuple[list[Event], list[tuple[int, str]], bool]:
    """(events, problems, truncated) of `lines`: an open session file (lines keep their newline; with
    `partial_tail` a last line without one is a write in progress, not decoded, and sets truncated) or
    complete lines split off a tail's buffer (`decode_lines`). Bad lines become problems (line, why).

    The cyclic GC is paused meanwhile: events hold no cycles, and a million new objects would
    otherwise trigger hundreds of full collections (several times the cost of decoding).
    """
    events: list[Event] = []
    problems: list[tuple[int, str]] = []
    append = events.append
    truncated = False
    loads, builders = orjson.loads, PLAIN_BUILDERS
    with gc_paused():
        for lineno, raw in enumerate(lines, first_lineno):
            if partial_tail and raw[-1:] != b"\n":  # the last line, still being written (or cut off)
                if raw and not raw.isspace():
                    truncated = True
                    problems.append((lineno, "last line is incomplete (session still being written or cut off); "
                                             "ignored"))
                break
            if not raw or raw.isspace():
                continue
            try:
                try:  # the common line straight to its kind's builder; anything else through `decode`, which words it
                    d = loads(raw)
                    build = builders.get(d["kind"]) if type(d) is dict and type(d.get("kind")) is str else None
                except orjson.JSONDecodeError:
                    build = None
                append(build(d, lineno) if build is not None else decode(raw, lineno))
            except SchemaTooNew as e:
                raise SessionReadError(f"{path}:{lineno}: {e.message}") from None
            except EventError as e:
                problems.append((lineno, e.message))
    return events, problems, truncated


def _refuse_headerless(path: Path, data: bytes, problems: list[str], truncated: bool, allow_empty: bool) -> None:
    """Raise for a file with no event at all, unless it is a session not written yet and that is allowed."""
    head = data[:4096]
    if b"\0" in head or _not_text(head):
        raise SessionReadError(f"{path}: not an sgtui session (binary data; {EXPECTED})")
    bad_lines = problems[:-1] if truncated else problems
    if bad_lines:
        raise SessionReadError(f"{path}: not an sgtui session ({bad_lines[0].split(': ', 1)[1]}; {EXPECTED})")
    if allow_empty:
        return
    if not data.strip():
        raise SessionEmpty(f"{path}: not an sgtui session (the file is empty; {EXPECTED})")
    try:
        why = f"first event is {decode(data.strip(), 1).kind!r}, no line break after it"
    except EventError as e:  # e.g. a JSON document without a newline: say what it is not
        why = e.message
    raise SessionEmpty(f"{path}: not an sgtui session ({why}; {EXPECTED})")


def _not_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 4  # a multi-byte character cut by the 4096-byte window is still text
    return False


class SessionTail:
    """Follow a session that another process is writing.

    Keeps a byte offset and only decodes complete lines; a partial last line
    waits for its newline. Growth is detected by size, not by re-reading.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.offset = 0
        self.lineno = 1
        self.problems: list[str] = []

    def poll(self) -> list[Event]:
        """New complete events since the last poll (possibly none)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # replaced/truncated: start over
            self.offset, self.lineno = 0, 1
        if size == self.offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        end = data.rfind(b"\n") + 1
        if end == 0:
            return []
        chunk = data[:end]
        events, problems = decode_lines(chunk[:-1], self.path, self.lineno)
        self.problems.extend(problems)
        self.offset += end
        self.lineno += chunk.count(b"\n")
        return events


if __name__ == "__main__":  # the helper that decodes a large session's tail (`sgtui.session_split`)
    import sys

    def _reduce(events: list) -> Any:
        from sgtui.state.steps import reduce_tail  # numpy: only in a replay's helper, only once it is asked

        return reduce_tail(events)

    sys.stderr.flush()
    # no teardown of ~1M objects: done once written
    os._exit(session_split.main(sys.argv[1:], _decode, _reduce, pack_events))
