"""A large session read in two parts at once (`sgtui.session_split`) gives what a read in one part gives:
the same events, the same problems at the same line numbers, the same truncated tail; a helper that fails in
any way only costs time; nothing is left behind (no helper process, no file)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from sgtui import events as E
from sgtui import session_split
from sgtui.childproc import group_alive
from sgtui.session import SessionReadError, read_session
from tests.gen import generate


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def session_lines(seed: int = 0) -> list[bytes]:
    """A session with what the reader must judge the same in either part: bad JSON, a bad event, blank lines."""
    lines = [E.encode(e) for e in generate(steps=6, requests=12, itl_len=16, seed=seed)]
    n = len(lines)
    lines.insert(n // 5, b"{not json\n")  # in the head
    lines.insert(n // 2, b"\n")
    lines.insert(3 * n // 4, b'{"kind": "request", "t": 5.0, "itl": [0.1, "x"]}\n')  # in the tail
    lines.insert(3 * n // 4 + 5, b'{"kind": "phase", "t": -1.0}\n')
    return lines


@pytest.fixture
def split_always(monkeypatch):
    """Every file read in two parts (SPLIT_MIN is the parent's decision; the helper only decodes)."""
    monkeypatch.setattr(session_split, "SPLIT_MIN", 0)
    monkeypatch.delenv(session_split.ENV, raising=False)


def one_part(path: Path, monkeypatch) -> object:
    with monkeypatch.context() as m:
        m.setenv(session_split.ENV, "0")
        return read_session(path)


def leftovers() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("sgtui-read-")}


@pytest.mark.parametrize("piece", [session_split.PIECE_LINES, 37])  # one piece; many, handed over as they come
def test_two_parts_read_as_one(tmp_path, split_always, monkeypatch, piece):
    monkeypatch.setattr(session_split, "PIECE_LINES", piece)
    path = write(tmp_path / "s.jsonl", session_lines() + [b'{"kind": "log", "t": 9.0, "run": "a", "li'])
    before = leftovers()
    got = read_session(path)
    want = one_part(path, monkeypatch)
    assert got.events == want.events and len(got.events) > 400
    assert got.problems == want.problems and len(got.problems) == 4  # bad JSON, two bad events, the cut line
    assert [p.split(":")[1] for p in got.problems] == [p.split(":")[1] for p in want.problems]
    assert got.truncated_tail and want.truncated_tail
    assert all(type(e.itl).__name__ == "array" for e in got.events if isinstance(e, E.Request))
    assert leftovers() == before


def test_the_tail_really_comes_from_the_helper(tmp_path, split_always, monkeypatch):
    """The split is taken (a helper ran and its events were used), not silently read in one part."""
    path = write(tmp_path / "s.jsonl", session_lines(1))
    results = []
    real = session_split.TailDecoder.result

    def spy(self, unpack, timeout=session_split.WAIT_S):
        out = real(self, unpack, timeout)
        results.append(out)
        return out

    monkeypatch.setattr(session_split.TailDecoder, "result", spy)
    got = read_session(path)
    assert len(results) == 1 and results[0] is not None and 0 < len(results[0][0]) < len(got.events)
    assert got.events[-len(results[0][0]):] == results[0][0]


def test_the_helper_runs_this_sgtui_whatever_the_working_directory_holds(tmp_path, split_always, monkeypatch):
    """Read from a directory holding another sgtui (another checkout: a benchmark's baseline beside this
    tree), the helper still imports this one: `-m` would put the working directory first on its path."""
    other = tmp_path / "other"
    (other / "sgtui").mkdir(parents=True)
    (other / "sgtui" / "__init__.py").write_text("raise SystemExit(7)\n")
    path = write(tmp_path / "s.jsonl", session_lines(1))
    monkeypatch.chdir(other)
    results = []
    real = session_split.TailDecoder.result
    monkeypatch.setattr(session_split.TailDecoder, "result",
                        lambda self, *a: results.append(real(self, *a)) or results[-1])
    got = read_session(os.path.relpath(path, other))  # a path relative to the working directory, too
    assert results[0] is not None and got.events == one_part(path, monkeypatch).events


@pytest.mark.parametrize("how", ["no python", "exits 1", "too slow"])
def test_a_failed_helper_only_costs_time(tmp_path, split_always, monkeypatch, how):
    path = write(tmp_path / "s.jsonl", session_lines(2))
    want = one_part(path, monkeypatch)
    if how == "no python":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "nowhere"))
    elif how == "exits 1":
        monkeypatch.setattr(sys, "executable", "/bin/false")
    else:
        monkeypatch.setattr(session_split, "WAIT_S", 0.0)
    pids = []
    real_init = session_split.TailDecoder.__init__

    def init(self, *a):
        real_init(self, *a)
        pids.append(self.proc.pid if self.proc is not None else None)

    monkeypatch.setattr(session_split.TailDecoder, "__init__", init)
    before = leftovers()
    got = read_session(path)
    assert got.events == want.events and got.problems == want.problems
    assert leftovers() == before
    assert all(pid is None or not group_alive(pid) for pid in pids)  # the helper's group is gone


@pytest.mark.parametrize("piece", [session_split.PIECE_LINES, 29])
def test_a_newer_schema_in_the_tail_is_refused_with_its_line(tmp_path, split_always, monkeypatch, piece):
    """A line only the caller may judge (a header of a newer schema): the helper gives up (after the pieces
    before it were handed over, with small pieces), the caller decodes the tail and refuses the file, naming
    the line as a one-part read does."""
    monkeypatch.setattr(session_split, "PIECE_LINES", piece)
    lines = session_lines(3)
    lines.insert(len(lines) - 10, orjson.dumps({"kind": "session", "t": 1.0, "schema": E.SCHEMA + 1}) + b"\n")
    path = write(tmp_path / "s.jsonl", lines)
    with pytest.raises(SessionReadError) as split:
        read_session(path)
    with pytest.raises(SessionReadError) as whole:
        one_part(path, monkeypatch)
    assert str(split.value) == str(whole.value) and f":{len(lines) - 10}:" in str(split.value)


def test_small_files_and_single_cores_read_in_one_part(tmp_path, monkeypatch):
    path = write(tmp_path / "s.jsonl", session_lines(4))
    with path.open("rb") as f:
        assert session_split.split_point(f) is None  # below SPLIT_MIN
        monkeypatch.setattr(session_split, "SPLIT_MIN", 0)
        at = session_split.split_point(f)
        assert at is not None and path.read_bytes()[at - 1:at] == b"\n" and f.tell() == 0
        monkeypatch.setattr(os, "cpu_count", lambda: 1)
        assert session_split.split_point(f) is None
    other = write(tmp_path / "other.jsonl", [b'{"level": "info"}\n'] * 1000)  # large enough, not a session
    with other.open("rb") as f:
        assert session_split.split_point(f) is None and f.tell() == 0


def test_the_helper_dies_with_its_caller(tmp_path):
    """A caller killed mid-read (kill -9, the OOM killer) leaves no helper and no file: here the helper blocks
    opening a FIFO nobody writes, and its caller exits without `close`."""
    if not session_split.parent_death_signal():
        pytest.skip("no PR_SET_PDEATHSIG on this platform")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code = ("import os, sys; from pathlib import Path; from sgtui.session_split import TailDecoder; "
            f"h = TailDecoder(Path({str(fifo)!r}), 0); print(h.proc.pid, flush=True); os._exit(0)")
    before = leftovers()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(pid)
    assert leftovers() == before  # and no file: the helper's output never had a name


def reduced_read(path: Path):
    """A read whose helper reduces the tail's steps, and those reductions once handed over."""
    res = read_session(path, reduce_tail=True)
    assert res.tail is not None and 0 < res.tail_start < len(res.events)
    assert res.tail._out.closed  # the events' pieces are freed once loaded; the helper goes on reducing
    deadline = time.monotonic() + 60
    while (got := res.tail.reductions()) is None and not res.tail.ended and time.monotonic() < deadline:
        time.sleep(0.02)
    from sgtui.state import unpack_tail

    return res, unpack_tail(got) if got is not None else None


def test_the_helper_reduces_the_tails_steps_as_they_are_reduced_here(tmp_path, split_always):
    """With `reduce_tail` the helper goes on once the events are handed over: it reduces the requests of the
    tail's steps, and each step folded here from those very requests adopts exactly what reducing them here
    gives (its ITL set made from this process's own requests); the step that began in the head is left to be
    reduced here; the helper is gone once its reductions are taken."""
    from sgtui.state import SessionState, adopt_reductions, request_stats

    path = write(tmp_path / "s.jsonl", [E.encode(e) for e in generate(steps=12, requests=24, itl_len=48, seed=5)])
    res, got = reduced_read(path)
    assert got and res.tail.ended and not group_alive(res.tail.proc.pid)
    state = SessionState(str(path)).apply_all(res.events)
    assert adopt_reductions(state.runs, got, res.events, res.tail_start) == []

    def steps(events):
        return {(e.run, e.step) for e in events if isinstance(e, E.Request) and e.step > 0}

    adopted = {(label, n) for label, run in state.runs.items() for n, st in run.steps.items() if "requests" in st._cache}
    head, tail = steps(res.events[:res.tail_start]), steps(res.events[res.tail_start:])
    assert adopted == tail - head and len(adopted) >= 8 and tail & head  # one step began in the head
    for label, n in adopted:
        st = state.runs[label].steps[n]
        count, mine = st._cache["requests"]
        assert count == len(st.requests) and mine == request_stats(st.requests)
        ok = [r for r in st.requests if not r.error]
        assert not mine.itl.kept and len(mine.itl.requests) == len(ok)
        assert all(a is b for a, b in zip(mine.itl.requests, ok))  # this process's own requests
        assert sorted(mine.itl.raw.tolist()) == request_stats(st.requests).itl.values.tolist()  # made again here


def test_reductions_go_only_to_steps_folded_from_the_same_requests(tmp_path, split_always):
    """A step not folded yet (or partly) waits for a later try; a step holding other request objects (a fold
    of another read) never adopts; nothing is adopted twice."""
    from sgtui.state import SessionState, adopt_reductions

    path = write(tmp_path / "s.jsonl", [E.encode(e) for e in generate(steps=8, requests=16, itl_len=40, seed=6)])
    res, got = reduced_read(path)
    other = SessionState(str(path)).apply_all(read_session(path).events)  # equal requests, other objects
    assert adopt_reductions(other.runs, got, res.events, res.tail_start) == []
    assert not any("requests" in st._cache for run in other.runs.values() for st in run.steps.values())
    state = SessionState(str(path))
    cut = max(i for i, e in enumerate(res.events) if isinstance(e, E.Request))  # the last step's, all but one
    state.apply_all(res.events[:cut])
    left = adopt_reductions(state.runs, got, res.events, res.tail_start)
    assert 0 < len(left) < len(got)
    state.apply_all(res.events[cut:])
    assert adopt_reductions(state.runs, left, res.events, res.tail_start) == []
