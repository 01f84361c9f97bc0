"""sgtui.lifecycle.run_session: one session's runs end as an Outcome (exit code, fatal, reports), never a raise.

The real orchestrator with the stand-in runner (tests/fixtures/fake_runner.py): no engine needed."""

import os
import sys
from pathlib import Path

import pytest

from sgtui import portlock
from sgtui.config import RunConfig
from sgtui.events import RunEnd
from sgtui.lifecycle import Outcome, run_session
from sgtui.options import ReportOptions
from sgtui.orchestrator import REPO_ROOT
from sgtui.session import read_session

FAKE = Path(__file__).parent / "fixtures" / "fake_runner.py"


def _runs(tmp_path, modes, port=8100):
    return [RunConfig(label=f"r{i}-{m}", backend="vllm", strategy="sleep1", workdir=str(tmp_path / f"w{i}"),
                      port=port + i) for i, m in enumerate(modes)]


def _session(tmp_path, modes, exports=(), **kw):
    runs = _runs(tmp_path, modes, kw.pop("port", 8100))
    mode_of = {r.label: m for r, m in zip(runs, modes)}
    os.environ["SGTUI_REPO"] = str(REPO_ROOT)
    return run_session(runs, kw.pop("session", tmp_path / "s.jsonl"), list(exports), sample_gpus=False,
                       grace=3.0, runner_argv=lambda c: [sys.executable, str(FAKE), mode_of[c.label], c.label], **kw)


def test_every_run_ok_exit_0_and_reports_written_from_the_saved_session(tmp_path):
    seen = []
    out = _session(tmp_path, ["ok", "ok"], exports=["txt", "json"], subscribers=[seen.append])
    assert out.started and out.fatal == "" and out.export_error == ""
    assert out.statuses == {"r0-ok": "ok", "r1-ok": "ok"} and out.exit_code == 0
    assert out.exports == [tmp_path / "s.txt", tmp_path / "s.json"]
    assert "r0-ok" in (tmp_path / "s.txt").read_text() and "r1-ok" in (tmp_path / "s.json").read_text()
    assert any(isinstance(e, RunEnd) for e in seen)  # the subscribers got the events


def test_a_failed_run_exit_1_and_still_reported(tmp_path):
    out = _session(tmp_path, ["crash", "ok"], exports=["txt"])
    assert out.started and out.statuses == {"r0-crash": "failed", "r1-ok": "ok"}
    assert out.exit_code == 1 and out.fatal == ""
    assert out.exports == [tmp_path / "s.txt"] and (tmp_path / "s.txt").exists()


def test_a_port_another_sgtui_holds_nothing_runs_exit_2(tmp_path):
    locks = portlock.acquire([45201], "other.jsonl")
    try:
        out = _session(tmp_path, ["ok"], exports=["txt"], port=45201)
    finally:
        locks.release()
    assert not out.started and out.exit_code == 2
    assert "45201" in out.fatal and out.statuses == {} and out.exports == []
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "s.txt").exists()


def test_a_session_that_cannot_be_written_nothing_runs_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = _session(tmp_path, ["ok"], exports=["txt"], session=blocker / "s.jsonl")
    assert not out.started and out.exit_code == 2
    assert out.fatal.startswith(f"cannot write session {blocker / 's.jsonl'}: ") and out.exports == []


def test_reports_that_cannot_be_written_are_said_and_the_session_is_kept(tmp_path):
    (tmp_path / "s.txt").mkdir()  # the txt report's path is taken by a folder
    out = _session(tmp_path, ["ok"], exports=["txt"])
    assert out.started and out.exit_code == 0 and out.exports == []
    assert "IsADirectoryError" in out.export_error
    assert {e.run: e.status for e in read_session(tmp_path / "s.jsonl").events if isinstance(e, RunEnd)} == \
        {"r0-ok": "ok"}


def test_a_tracker_failure_is_an_export_error_in_its_own_words(tmp_path):
    opts = ReportOptions(log_to="nosuchtracker", log_dir=str(tmp_path / "trk"))
    out = _session(tmp_path, ["ok"], exports=["txt"], opts=opts)
    assert out.started and out.exports == [] and out.export_error
    assert out.export_error.startswith("--log-to: expected one of")


def test_an_orchestrator_that_blows_up_mid_run_is_fatal_not_a_raise(tmp_path):
    class Boom:
        fatal = ""
        statuses = {"a": "running"}

        def __init__(self, runs, session_path, **kw):
            self.kw = kw
            Path(session_path).write_text("")

        def run_sync(self):
            raise RuntimeError("bug")

    got = []
    out = run_session(_runs(tmp_path, ["ok"]), tmp_path / "s.jsonl", [], orchestrator_factory=Boom,
                      on_orchestrator=got.append, subscribers=[print])
    assert out.started and out.exit_code == 1 and out.statuses == {"a": "running"}
    assert out.headline == "orchestrator failed: RuntimeError: bug" and "Traceback" in out.fatal
    assert isinstance(got[0], Boom) and got[0].kw["subscribers"] == [print]


@pytest.mark.parametrize("statuses,fatal,started,code", [
    ({"a": "ok", "b": "ok"}, "", True, 0),
    ({"a": "ok", "b": "cancelled"}, "", True, 1),
    ({"a": "ok"}, "cannot write session s: disk full", True, 1),
    ({}, "", True, 1),  # no run at all is not a success
    ({}, "port 8100 is taken", False, 2),
])
def test_exit_code(statuses, fatal, started, code):
    assert Outcome(statuses, fatal, [], "", started).exit_code == code
