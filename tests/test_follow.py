"""sgtui.follow.SessionFollower: events as they land, and alive / gone / unknown for each session's writer."""

import socket
import subprocess
import sys

from sgtui.events import RunEnd, RunStart, SessionHeader, encode
from sgtui.follow import SessionFollower
from sgtui.state import SessionState


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def write(path, *events, raw: bytes = b""):
    with open(path, "ab") as f:
        for e in events:
            f.write(encode(e))
        f.write(raw)


def fold(f: SessionFollower, states: list[SessionState]):
    batches = f.read()
    for st, b in zip(states, batches):
        st.apply_all(b.events)
    return batches


def test_reads_new_events_and_problems_once_and_polls_at_once_while_behind(tmp_path):
    path = tmp_path / "s.jsonl"
    clock = Clock()
    f = SessionFollower([path], poll_s=0.2, mono=clock)
    assert f.due() and [b.events for b in f.read()] == [[]]  # no file yet: nothing, no error
    assert not f.due()
    clock.t += 0.2
    write(path, SessionHeader(t=1.0, pid=1), raw=b"not json\n")
    [b] = f.read()
    assert [e.kind for e in b.events] == ["session"] and len(b.problems) == 1
    assert f.due()  # events came: a backlog is read on at once
    [b] = f.read()
    assert b.events == [] and b.problems == []  # each problem said once
    assert not f.due()


def test_a_writer_gone_with_runs_unfinished_is_dead_and_over(tmp_path):
    path = tmp_path / "s.jsonl"
    pid = dead_pid()
    write(path, SessionHeader(t=1.0, pid=pid, host=socket.gethostname()), RunStart(t=2.0, run="a"))
    f, st = SessionFollower([path]), SessionState(str(path))
    fold(f, [st])
    assert f.check_owners([st])
    o = f.owners[0]
    assert (o.state, o.pid, o.header, o.done) == ("gone", pid, True, False)
    assert o.dead and o.over and o.why_dead == f"sgtui pid {pid} is gone; runs without run_end will never finish"


def test_a_writer_gone_after_every_run_ended_is_over_not_dead(tmp_path):
    path = tmp_path / "s.jsonl"
    write(path, SessionHeader(t=1.0, pid=dead_pid(), host=socket.gethostname()), RunStart(t=2.0, run="a"),
          RunEnd(t=3.0, run="a", status="ok"))
    f, st = SessionFollower([path]), SessionState(str(path))
    fold(f, [st])
    f.check_owners([st])
    o = f.owners[0]
    assert o.state == "gone" and o.done and o.over and not o.dead and o.why_dead == ""


def test_this_process_is_alive_and_the_announcement_is_the_callers(tmp_path):
    path = tmp_path / "s.jsonl"
    write(path, SessionHeader(t=1.0, pid=__import__("os").getpid(), host=socket.gethostname()),
          RunStart(t=2.0, run="a"))
    f, st = SessionFollower([path]), SessionState(str(path))
    fold(f, [st])
    f.check_owners([st])
    o = f.owners[0]
    assert o.state == "alive" and not o.over and not o.dead and not o.announced
    o.announced = True
    f.check_owners([st], force=True)
    assert f.owners[0].announced  # the follower never resets it


def test_another_host_or_no_header_is_unknown_never_dead(tmp_path):
    other, empty = tmp_path / "other.jsonl", tmp_path / "empty.jsonl"
    write(other, SessionHeader(t=1.0, pid=dead_pid(), host="elsewhere.invalid"), RunStart(t=2.0, run="a"))
    empty.write_bytes(b"")
    f = SessionFollower([other, empty])
    states = [SessionState(str(other)), SessionState(str(empty))]
    fold(f, states)
    f.check_owners(states)
    o, e = f.owners
    assert (o.state, o.host, o.header, o.dead, o.over) == ("unknown", "elsewhere.invalid", True, False, False)
    assert (e.state, e.header, e.dead, e.over) == ("unknown", False, False, False)
    write(other, RunEnd(t=3.0, run="a", status="ok"))
    fold(f, states)
    f.check_owners(states, force=True)
    assert f.owners[0].over and not f.owners[0].dead  # unknown: over once every run ended


def test_owner_checks_are_rate_limited_and_skip_finished_sessions_when_asked(tmp_path):
    path = tmp_path / "s.jsonl"
    write(path, SessionHeader(t=1.0, pid=dead_pid(), host=socket.gethostname()), RunStart(t=2.0, run="a"),
          RunEnd(t=3.0, run="a", status="ok"))
    clock = Clock()
    f, st = SessionFollower([path], owner_every=1.0, check_done=False, mono=clock), SessionState(str(path))
    fold(f, [st])
    assert f.check_owners([st]) and not f.check_owners([st])
    clock.t += 1.0
    assert f.check_owners([st])
    o = f.owners[0]
    assert o.done and o.state == "unknown" and not o.dead  # never looked up: a finished session cannot die
