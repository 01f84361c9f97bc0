"""Broken session files, as users meet them: cut off mid-line (a crash, a full disk, a partial copy),
garbage lines in the middle (a hand edit, two writers), a session from a newer sgtui. Each through the
commands a user runs on them: report, ls, attach, replay. Files are a real recording (sessions/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from sgtui.events import RunEnd
from sgtui.session import read_session
from tests.faults.harness import REPO, fault, sgtui

RECORDED = REPO / "sessions" / "20261123T214724Z-vllm-restart_vs_vllm-sleep1-cpu.jsonl"


def copy(tmp_path: Path) -> Path:
    d = tmp_path / "sessions"
    d.mkdir()
    return Path(shutil.copy(RECORDED, d / RECORDED.name))


def copy_lines(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """A copy of the recording to damage, and its lines (with their newlines) to edit and write back."""
    path = copy(tmp_path)
    return path, path.read_bytes().splitlines(keepends=True)


def one_line_error(r, needle: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("sgtui: error:"), r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr
    return lines[0]


@fault("truncated session (cut mid-line)", "loads everything before the cut with one warning naming the line; "
       "report, ls and attach work")
def test_truncated_session(tmp_path, observed):
    path = copy(tmp_path)
    data = path.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) // 2) + 40  # 40 bytes into a line halfway through
    path.write_bytes(data[:cut])
    complete = data[:cut].count(b"\n")
    r = sgtui("report", str(path))
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "last line is incomplete" in ln]
    assert len(warn) == 1 and f":{complete + 1}:" in warn[0]
    assert "Steps completed" in r.stdout
    assert len(read_session(path).events) == complete
    ls = sgtui("ls", str(path.parent))
    assert ls.returncode == 0 and path.name in ls.stdout and "dead" in ls.stdout  # runs never ended in the file
    att = sgtui("attach", "--no-ui", str(path), timeout=60)
    assert att.returncode == 3 and "dead session" in att.stderr, att.stderr
    observed(f"report exit 0, 1 warning ({warn[0].split(': ', 1)[1][:60]}); {complete} events kept; "
             "ls: dead; attach: dead (exit 3)")


@fault("garbage lines in a session", "each bad line reported by number and skipped; the rest loads, "
       "verdict unchanged")
def test_garbage_lines(tmp_path, observed):
    path, lines = copy_lines(tmp_path)
    clean_report = sgtui("report", str(path), "--format", "json")
    assert clean_report.returncode == 0
    bad = [b"this is not json\n", b'{"kind": "request", "t": "yesterday"}\n', b'{"kind": "telepathy", "t": 1}\n',
           b"\x00\x01\x02\n"]
    at = [10, 200, 400, 600]
    for i, b in sorted(zip(at, bad), reverse=True):
        lines.insert(i, b)
    path.write_bytes(b"".join(lines))
    r = sgtui("report", str(path), "--format", "json")
    assert r.returncode == 0, r.stderr
    warns = [ln for ln in r.stderr.splitlines() if ln.startswith("sgtui: warning:")]
    assert len(warns) == 4 and all(f":{i + 1 + k}:" in w for k, (i, w) in enumerate(zip(at, warns))), warns
    got, clean = orjson.loads(r.stdout), orjson.loads(clean_report.stdout)
    assert len(got.pop("problems")) == 4 and clean.pop("problems") == []  # the report says what it skipped
    assert got == clean, "garbage changed the numbers"
    assert {e.run: e.status for e in read_session(path).events if isinstance(e, RunEnd)} == \
        {"vllm-restart": "ok", "vllm-sleep1": "ok"}
    ls = sgtui("ls", str(path.parent))
    assert "  ok  " in ls.stdout
    observed(f"report exit 0, {len(warns)} warnings by line number, listed under 'problems' in the JSON report, "
             "every number identical to the clean file's; ls: ok")


@fault("session from a newer schema", "one-line error naming the schema from report, replay, attach; ls lists it "
       "as unreadable with the reason")
def test_newer_schema(tmp_path, observed):
    path, lines = copy_lines(tmp_path)
    header = orjson.loads(lines[0])
    header["schema"] = 99
    path.write_bytes(orjson.dumps(header) + b"\n" + b"".join(lines[1:]))
    msgs = []
    for args in (["report", str(path)], ["replay", "--no-ui", str(path)], ["attach", "--no-ui", str(path)]):
        msgs.append(one_line_error(sgtui(*args), "session written by a newer sgtui (schema 99)"))
    ls = sgtui("ls", str(path.parent))
    assert ls.returncode == 0 and f"{path.name}  unreadable:" in ls.stdout and "schema 99" in ls.stdout
    observed(f"report/replay/attach: exit 2, {msgs[0].split(': ', 2)[-1][:80]}; ls: unreadable with the reason")
