"""A file that is not a session is refused by `sgtui replay` and `sgtui report`: one line naming the file and
what was expected, exit code 2, no screen opened. A session being written right now may be empty for a
moment: followers (`replay --follow`, `attach`) wait for it instead."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgtui import cli
from sgtui.session import PEEK, SessionEmpty, SessionReadError, check_session, read_session

REPO = Path(__file__).resolve().parents[1]

NOT_SESSIONS = {
    "empty.jsonl": b"",
    "blank.jsonl": b"\n\n  \n",
    "binary.jsonl": bytes(range(256)) * 8,  # NULs and invalid UTF-8, no line break before the end
    "binary-lines.bin": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00",
    "doc.json": b'{"name": "not sgtui", "items": [1, 2, 3]}',  # one JSON document, no newline
    "lines.jsonl": b'{"kind": "span", "t": 1}\n{"kind": "span", "t": 2}\n',  # JSON lines of something else
    "pretty.json": b'{\n  "a": 1\n}\n',
}


def sgtui(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sgtui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def files(tmp_path):
    out = {}
    for name, data in NOT_SESSIONS.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    return out


@pytest.mark.parametrize("name", sorted(NOT_SESSIONS))
def test_read_session_refuses_what_is_not_a_session(files, name):
    with pytest.raises(SessionReadError) as e:
        read_session(files[name])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{files[name]}: not an sgtui session (")
    assert "expected an sgtui session" in msg


def test_follow_reads_an_empty_or_half_written_session_as_no_events(tmp_path):
    empty = tmp_path / "new.jsonl"
    empty.write_bytes(b"")
    assert read_session(empty, allow_empty=True).events == []
    half = tmp_path / "half.jsonl"
    half.write_bytes(b'{"kind":"session","t":1,"sche')  # the header line being written
    assert read_session(half, allow_empty=True).events == []
    with pytest.raises(SessionEmpty):
        read_session(half)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(NOT_SESSIONS["binary.jsonl"])
    with pytest.raises(SessionReadError, match="binary data"):  # never a session, whoever asks
        read_session(binary, allow_empty=True)


@pytest.mark.parametrize("command", ["replay", "report"])
@pytest.mark.parametrize("name", ["empty.jsonl", "binary.jsonl", "doc.json", "lines.jsonl"])
def test_cli_refuses_in_one_line(files, command, name):
    r = sgtui(command, str(files[name]))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"sgtui: error: {files[name]}: not an sgtui session (")
    assert "expected an sgtui session" in lines[0]
    assert r.stdout == ""  # no blank report


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_main(monkeypatch, argv: list[str]) -> int:
    monkeypatch.setattr(sys, "stdin", _Tty())
    monkeypatch.setattr(sys, "stdout", _Tty())
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code


def test_replay_on_a_terminal_opens_no_screen_for_an_empty_file(files, monkeypatch, capsys):
    import sgtui.tui.app

    opened = []
    monkeypatch.setattr(sgtui.tui.app, "run_replay", lambda *a, **k: opened.append(a) or 0)
    assert _run_main(monkeypatch, ["replay", str(files["empty.jsonl"])]) == 2
    assert not opened  # today: a blank dashboard, exit 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file is empty" in err[0] and str(files["empty.jsonl"]) in err[0]


def test_replay_follow_waits_for_a_session_still_empty(tmp_path, monkeypatch):
    import sgtui.tui.app

    path = tmp_path / "being-written.jsonl"
    path.write_bytes(b"")
    opened = []
    monkeypatch.setattr(sgtui.tui.app, "run_replay", lambda paths, **k: opened.append((paths, k)) or 0)
    assert _run_main(monkeypatch, ["replay", "--follow", str(path)]) == 0
    assert opened and opened[0][0] == [str(path)] and opened[0][1]["follow"] is True


def _big_session(path: Path, first: bytes = b"") -> Path:
    """A valid session of a few MiB (over `check_session`'s peek), optionally after a given first line."""
    from sgtui.events import encode
    from tests.gen import big_session

    with open(path, "wb") as f:
        f.write(first)
        f.writelines(encode(e) for e in big_session(6000))
    assert path.stat().st_size > 2 * PEEK
    return path


def test_replay_on_a_terminal_reads_a_large_session_once_in_the_ui(tmp_path, monkeypatch):
    """Before the UI opens only the first lines are checked: the whole file is the UI's to read (it used to be
    read and folded once more before, doubling a large session's time to the dashboard)."""
    import sgtui.tui.app
    from sgtui import session

    path = _big_session(tmp_path / "big.jsonl")
    reads = []
    monkeypatch.setattr(session, "_read", lambda p, reduce_tail=False: reads.append(p) or ([], [], False, None))
    opened = []
    monkeypatch.setattr(sgtui.tui.app, "run_replay", lambda paths, **k: opened.append(paths) or 0)
    assert _run_main(monkeypatch, ["replay", str(path)]) == 0
    assert opened == [[str(path)]] and reads == []


def test_check_session_refuses_from_the_first_lines_as_a_whole_read_does(tmp_path):
    from sgtui.events import SCHEMA

    for name, first in [("request-first.jsonl", b'{"kind":"log","t":1,"run":"a","line":"x"}\n'),
                        ("newer.jsonl", b'{"kind":"session","t":1,"schema":%d}\n' % (SCHEMA + 1))]:
        path = _big_session(tmp_path / name, first)
        with pytest.raises(SessionReadError) as whole:
            read_session(path)
        with pytest.raises(SessionReadError) as peek:
            check_session(path)
        assert str(peek.value) == str(whole.value) and str(path) in str(peek.value)
    check_session(_big_session(tmp_path / "fine.jsonl"))  # a session: no error
    for name in NOT_SESSIONS:  # small files: the same refusals as a whole read
        (tmp_path / name).write_bytes(NOT_SESSIONS[name])
        with pytest.raises(SessionReadError, match="not an sgtui session"):
            check_session(tmp_path / name)
    with pytest.raises(SessionReadError, match="no such session file"):
        check_session(tmp_path / "missing.jsonl")
