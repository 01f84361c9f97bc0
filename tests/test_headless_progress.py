"""Headless progress (sgtui.progress, sgtui.headless.Progress): rows folded from crafted events, the piped
printer's timestamped lines and heartbeats on a fake clock, the live display's table and clean stop, and
`sgtui --no-ui` end to end with a scripted stand-in runner whose piped stderr is read back."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console
from rich.live import Live

from sgtui import events as E
from sgtui.headless import Progress
from sgtui.progress import (
    LinePrinter,
    LivePrinter,
    Plan,
    heartbeat_text,
    make_printer,
    progress_rows,
    progress_table,
    stamp,
)
from sgtui.state import SessionState

REPO = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.*)$")


def run_events(label: str = "vllm-sleep1", t: float = T0, config: dict | None = None) -> list[E.Event]:
    """A run that started its engine (10 s), finished step 1 (4 requests of 40 tokens, rollout 2 s, then offload,
    train, reload, weight sync) and is 10 s into the rollout of step 2: 3 requests done, one of them failed."""
    backend, strategy = label.split("-", 1)
    ev: list[E.Event] = [E.RunStart(t=t, run=label, backend=backend, strategy=strategy, device="cpu",
                                    config=config if config is not None else {"num_steps": 3, "num_rollouts": 4})]

    def phase(step: int, name: str, start: float, dur: float) -> None:
        ev.append(E.Phase(t=start, run=label, step=step, name=name, edge="start"))
        ev.append(E.Phase(t=start + dur, run=label, step=step, name=name, edge="end"))

    def request(step: int, end: float, tokens: int, error: str = "") -> None:
        ev.append(E.Request(t=end, run=label, step=step, start=end - 0.5, ttft=0.05, latency=0.5, itl=[0.01] * 3,
                            prompt_tokens=16, output_tokens=tokens, error=error))

    phase(0, "startup", t, 10.0)
    ev.append(E.Phase(t=t + 10.0, run=label, step=1, name="rollout", edge="start"))
    for i in range(4):
        request(1, t + 10.5 + 0.4 * i, 40)
    ev.append(E.Phase(t=t + 12.0, run=label, step=1, name="rollout", edge="end"))
    for i, name in enumerate(("offload", "train", "reload", "weight_sync")):
        phase(1, name, t + 12.0 + i, 1.0)
    ev.append(E.Phase(t=t + 16.0, run=label, step=2, name="rollout", edge="start"))
    request(2, t + 18.0, 50)
    request(2, t + 20.0, 50)
    request(2, t + 21.0, 0, error="timeout")
    return ev


def folded(events: list[E.Event]) -> SessionState:
    return SessionState("test").apply_all([E.SessionHeader(t=T0 - 1.0), *events])


# ---- the pure rows --------------------------------------------------------------------------------------------

def test_rows_of_a_run_in_its_rollout_and_of_one_starting():
    other = [E.RunStart(t=T0 + 5.0, run="sglang-release", backend="sglang", strategy="release"),
             E.Phase(t=T0 + 6.0, run="sglang-release", step=0, name="startup", edge="start")]
    state = folded(run_events() + other)
    rows = progress_rows(state, now=T0 + 26.0, plans={"sglang-release": Plan(steps=5, requests=64)})
    assert [r.run for r in rows] == ["vllm-sleep1", "sglang-release"]
    a, b = rows
    assert (a.status, a.phase, a.step, a.steps, a.where) == ("running", "rollout", 2, 3, "step 2/3")
    assert (a.rollout_step, a.requests_done, a.request_errors, a.requests_expected) == (2, 3, 1, 4)
    assert a.rollout_running and a.phase_s == pytest.approx(10.0)
    assert a.tok_s == pytest.approx(100 / 10.0)  # 2 ok requests x 50 tokens over the 10 s the rollout has run
    assert a.elapsed_s == pytest.approx(26.0) and a.last_phase == "weight_sync"
    assert heartbeat_text(a) == "vllm-sleep1 step 2/3 rollout 3/4 requests, 1 errors, 10 tok/s, 10 s"
    # the second run has no plan in its start event: the one given is used; it is in setup, nothing rolled out
    assert (b.phase, b.step, b.where, b.steps, b.requests_expected) == ("startup", 0, "setup", 5, 64)
    assert b.rollout_step == 0 and b.tok_s is None and b.phase_s == pytest.approx(20.0)
    assert heartbeat_text(b) == "sglang-release setup startup, 20 s"


def test_rows_follow_the_run_past_its_rollout_and_to_its_end():
    ev = run_events()
    ev += [E.Phase(t=T0 + 24.0, run="vllm-sleep1", step=2, name="rollout", edge="end"),
           E.Phase(t=T0 + 24.0, run="vllm-sleep1", step=2, name="offload", edge="start")]
    (row,) = progress_rows(folded(ev), now=T0 + 25.5)
    # the rollout's final numbers: its tokens over its whole 8 s, whatever the clock says now
    assert (row.phase, row.step, row.rollout_running) == ("offload", 2, False)
    assert row.tok_s == pytest.approx(100 / 8.0) and row.phase_s == pytest.approx(1.5)
    assert heartbeat_text(row) == "vllm-sleep1 step 2/3 offload, 1.5 s"
    ev.append(E.RunEnd(t=T0 + 30.0, run="vllm-sleep1", status="failed", detail="OOM"))
    (row,) = progress_rows(folded(ev), now=T0 + 99.0)
    assert (row.status, row.phase, row.phase_s) == ("failed", "", None)  # the open offload closed with the run
    assert row.elapsed_s == pytest.approx(30.0)  # to its end, not to now


def test_rows_without_any_plan_and_a_rollout_too_young_for_a_rate():
    ev = run_events(config={})
    (row,) = progress_rows(folded(ev), now=T0 + 16.2)  # 0.2 s into the rollout of step 2 (requests come later)
    assert (row.steps, row.requests_expected, row.where) == (0, 0, "step 2")
    assert row.requests_text == "3 requests, 1 errors" and row.tok_s is None


# ---- the piped printer ----------------------------------------------------------------------------------------

class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def piped(clock: Clock, **kw) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, highlight=False, soft_wrap=True, width=200)
    return Progress(console, live=False, clock=clock, heartbeat_s=10.0, ticker=False, **kw), out


def lines_of(out: io.StringIO, start: int = 0) -> list[str]:
    return out.getvalue().splitlines()[start:]


def test_piped_lines_are_timestamped_and_a_heartbeat_comes_after_10s_of_silence():
    clock = Clock(T0)
    progress, out = piped(clock)
    assert isinstance(progress.printer, LinePrinter)
    progress(E.RunStart(t=T0, run="vllm-sleep1", backend="vllm", strategy="sleep1", device="cuda"))
    progress(E.Phase(t=T0, run="vllm-sleep1", step=0, name="startup", edge="start"))
    got = lines_of(out)
    assert len(got) == 2 and all(STAMP.match(ln) for ln in got), got
    assert got[1] == "2027-01-15T08:00:00Z   vllm-sleep1 setup startup started"

    clock.t = T0 + 9.9
    progress.tick()
    assert len(lines_of(out)) == 2  # not yet
    clock.t = T0 + 10.0
    progress.tick()
    clock.t = T0 + 15.0
    progress.tick()  # 5 s after the heartbeat: nothing
    assert lines_of(out, 2) == ["2027-01-15T08:00:10Z vllm-sleep1 setup startup, 10 s"]
    for k in range(2, 20):  # a 200 s engine start: one line per 10 s, each with the time it has taken
        clock.t = T0 + 10.0 * k
        progress.tick()
    beats = lines_of(out, 2)
    assert len(beats) == 19 and beats[-1] == "2027-01-15T08:03:10Z vllm-sleep1 setup startup, 190 s"

    clock.t = T0 + 200.0
    progress(E.Phase(t=T0 + 200.0, run="vllm-sleep1", step=0, name="startup", edge="end", detail="cold"))
    end = lines_of(out)[-1]
    m = STAMP.match(end)
    assert m and m.group(1) == "2027-01-15T08:03:20Z" and "startup" in end and "200.00s" in end and "cold" in end


def test_heartbeat_is_per_run_and_stops_when_the_run_ends():
    clock = Clock(T0)
    progress, out = piped(clock, plans={"sglang-release": Plan(3, 4)})
    for e in run_events("sglang-release", t=T0 - 16.0):  # in the rollout of step 2 since T0
        progress(e)
    progress(E.RunStart(t=T0, run="vllm-sleep1", backend="vllm", strategy="sleep1"))
    progress(E.Phase(t=T0, run="vllm-sleep1", step=0, name="startup", edge="start"))
    n = len(lines_of(out))
    # vllm-sleep1 talks every 5 s (its phases), which must not hide that sglang-release has been quiet for 10
    clock.t = T0 + 5.0
    progress(E.Phase(t=T0 + 5.0, run="vllm-sleep1", step=0, name="startup", edge="end"))
    progress(E.Phase(t=T0 + 5.0, run="vllm-sleep1", step=0, name="warmup", edge="start"))
    clock.t = T0 + 10.0
    progress.tick()
    new = lines_of(out, n + 2)
    assert len(new) == 1 and new[0].startswith(stamp(T0 + 10.0) + " sglang-release step 2/3 rollout 3/4 requests, "
                                                                   "1 errors, "), new
    progress(E.RunEnd(t=T0 + 11.0, run="sglang-release", status="cancelled"))
    progress(E.RunEnd(t=T0 + 11.0, run="vllm-sleep1", status="ok"))
    n = len(lines_of(out))
    assert lines_of(out)[-1] == stamp(T0 + 11.0) + " vllm-sleep1: ok "
    clock.t = T0 + 60.0
    progress.tick()
    assert len(lines_of(out)) == n  # nothing runs: no heartbeat


def test_error_lines_are_timestamped_and_markup_in_messages_is_printed_as_is():
    clock = Clock(T0)
    progress, out = piped(clock)
    progress(E.Error(t=T0 + 3.0, run="vllm-sleep1", category="OOM", message="CUDA [red]out of memory[/]",
                     advice="lower --gpu-memory-utilization"))
    assert lines_of(out) == [f"{stamp(T0 + 3.0)}   vllm-sleep1 error [OOM] CUDA [red]out of memory[/]",
                             f"{stamp(T0 + 3.0)}     -> lower --gpu-memory-utilization"]


def test_the_printer_is_chosen_by_the_stream():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_printer(Console(file=Tty(), force_terminal=True)), LivePrinter)
    # FORCE_COLOR-style forcing on a pipe: still a pipe, still lines
    assert isinstance(make_printer(Console(file=io.StringIO(), force_terminal=True)), LinePrinter)
    assert isinstance(make_printer(Console(file=Tty(), force_terminal=True, _environ={"TERM": "dumb"})), LinePrinter)
    assert isinstance(make_printer(Console(file=io.StringIO(), force_terminal=False)), LinePrinter)


# ---- the live display -------------------------------------------------------------------------------------------

def test_live_table_shows_phase_step_requests_and_rate():
    rows = progress_rows(folded(run_events()), now=T0 + 26.0)
    out = io.StringIO()
    Console(file=out, width=120, force_terminal=False).print(progress_table(rows))
    text = out.getvalue()
    line = next(ln for ln in text.splitlines() if ln.startswith("vllm-sleep1"))
    assert "step 2/3" in line and "rollout" in line and "3/4 requests, 1 errors" in line and " 10 " in line, line


def test_live_display_stops_on_an_error_and_prints_event_lines_above_it():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150, highlight=False)
    progress = Progress(console, live=True)
    assert isinstance(progress.printer, LivePrinter)
    with pytest.raises(RuntimeError), progress:
        stop = threading.Event()

        def feed() -> None:  # events from another thread while the display refreshes (no lock-order deadlock)
            for e in run_events():
                progress(e)
            stop.set()

        th = threading.Thread(target=feed)
        th.start()
        th.join(timeout=20)
        assert stop.is_set(), "feeding events deadlocked against the live refresh"
        progress.printer._live.refresh()  # type: ignore[union-attr]
        raise RuntimeError("boom")
    assert progress.printer._live is None
    with Live(console=console):  # rich refuses a second live display while one is still active
        pass
    text = out.getvalue()
    assert "vllm-sleep1 step 1 weight_sync" in text and "step 1 done: 80.0 tok/s" in text
    assert "rollout" in text and "3/4 requests" in text  # the table was drawn


# ---- sgtui --no-ui end to end -------------------------------------------------------------------------------

def standin(tmp_path: Path, step_s: float) -> Path:
    """An engine-venv `python` whose `-m sgtui.runner --config JSON` runs tests/tui/fake_runner.py with
    FAKE_STEP_S=step_s (seconds per phase) put into the run config's env."""
    wrapper = tmp_path / "standin_runner.py"
    wrapper.write_text(
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "if args[:2] == ['-m', 'sgtui.runner']:\n"
        "    args = args[2:]\n"
        "i = args.index('--config')\n"
        "cfg = json.loads(args[i + 1])\n"
        f"cfg['env'] = {{**cfg.get('env', {{}}), 'FAKE_STEP_S': {str(step_s)!r}}}\n"
        "args[i + 1] = json.dumps(cfg)\n"
        f"os.execv(sys.executable, [sys.executable, {str(REPO / 'tests' / 'tui' / 'fake_runner.py')!r}, *args])\n")
    py = tmp_path / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(f"#!/bin/sh\nexec {sys.executable} {wrapper} \"$@\"\n")
    py.chmod(0o755)
    return py


def test_no_ui_piped_shows_timestamped_phase_starts_and_heartbeats(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    py = standin(tmp_path, 0.5)
    before = time.time()
    r = subprocess.run([sys.executable, "-m", "sgtui.cli", "--no-ui", "--run", f"vllm@{py}", "--model", str(model),
                        "--skip-preflight", "-o", str(tmp_path / "out"), "--export", "", "--num-steps", "1",
                        "--num-rollouts", "6"], capture_output=True, text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "SGTUI_HEARTBEAT_S": "0.15"})
    assert r.returncode == 0, r.stderr
    assert "sgtui benchmark report" in r.stdout and not any(STAMP.match(ln) for ln in r.stdout.splitlines())
    progress = [ln for ln in r.stderr.splitlines() if STAMP.match(ln)]
    assert "\x1b[" not in r.stderr  # a pipe gets no live display, no colours
    times = [datetime.strptime(STAMP.match(ln).group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
             .timestamp() for ln in progress]
    assert all(before - 2 <= t <= time.time() + 1 for t in times)  # UTC, now
    assert times == sorted(times)
    text = [STAMP.match(ln).group(2) for ln in progress]
    for phase in ("setup startup", "setup warmup", "step 1 rollout", "step 1 train", "setup shutdown"):
        assert f"  vllm-sleep1 {phase} started" in text, (phase, r.stderr)
    assert any(re.fullmatch(r"  vllm-sleep1 step 1 rollout +0\.\d\ds 6/6 ok", t) for t in text), r.stderr
    # heartbeats: during the 1 s engine start, and in the rollout with its requests so far
    assert any(re.fullmatch(r"vllm-sleep1 setup startup, 0\.\d s", t) for t in text), r.stderr
    assert any(re.fullmatch(r"vllm-sleep1 step 1/1 rollout [0-6]/6 requests(, \d+ tok/s)?, 0\.\d s", t)
               for t in text), r.stderr
    assert text[-1] == "vllm-sleep1: ok "


# -- run_headless and follow_headless over the shared lifecycle (sgtui.lifecycle) and follower (sgtui.follow) --
FAKE = Path(__file__).parent / "fixtures" / "fake_runner.py"


def _headless(tmp_path, modes, exports, port=8100):
    from sgtui.config import RunConfig
    from sgtui.headless import run_headless
    from sgtui.orchestrator import REPO_ROOT

    runs = [RunConfig(label=f"r{i}-{m}", backend="vllm", strategy="sleep1", workdir=str(tmp_path / f"w{i}"),
                      port=port + i) for i, m in enumerate(modes)]
    mode_of = {r.label: m for r, m in zip(runs, modes)}
    os.environ["SGTUI_REPO"] = str(REPO_ROOT)
    return run_headless(runs, tmp_path / "s.jsonl", exports, sample_gpus=False, grace=3.0,
                        runner_argv=lambda c: [sys.executable, str(FAKE), mode_of[c.label], c.label])


def test_run_headless_reports_on_stdout_and_says_what_it_wrote(tmp_path, capsys):
    assert _headless(tmp_path, ["ok", "crash"], ["json"]) == 1  # a failed run: exit 1
    out, err = capsys.readouterr()
    assert "sgtui benchmark report" in out and "r1-crash" in out
    assert f"wrote {tmp_path / 's.json'}" in err and f"session saved: {tmp_path / 's.jsonl'}" in err
    assert (tmp_path / "s.json").exists() and "sgtui: error:" not in err


def test_run_headless_on_a_taken_port_runs_nothing_and_exits_2(tmp_path, capsys):
    from sgtui import portlock

    locks = portlock.acquire([45211], "other.jsonl")
    try:
        assert _headless(tmp_path, ["ok"], ["txt"], port=45211) == 2
    finally:
        locks.release()
    out, err = capsys.readouterr()
    assert out == "" and "sgtui: error:" in err and "45211" in err and "session saved" not in err
    assert not (tmp_path / "s.jsonl").exists()


def _recorded(tmp_path, *, pid: int, host: str, end: bool):
    import socket

    from sgtui.session import SessionWriter

    path = tmp_path / "s.jsonl"
    with SessionWriter(path) as w:
        w.write(E.SessionHeader(t=1.0, pid=pid, host=host or socket.gethostname()))
        w.write(E.RunStart(t=2.0, run="a", backend="vllm", strategy="sleep1"))
        if end:
            w.write(E.RunEnd(t=3.0, run="a", status="ok"))
    return path


def _gone_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_follow_headless_ends_with_the_report_when_the_writer_is_gone_after_its_runs(tmp_path, capsys):
    from sgtui.headless import follow_headless

    path = _recorded(tmp_path, pid=_gone_pid(), host="", end=True)
    console = Console(file=io.StringIO(), highlight=False, soft_wrap=True)
    assert follow_headless(path, poll=0.01, owner_every=0.01, console=console) == 0
    assert "sgtui benchmark report" in capsys.readouterr().out


def test_follow_headless_says_dead_when_the_writer_died_with_runs_unfinished(tmp_path):
    from sgtui.headless import EXIT_DEAD, follow_headless

    pid = _gone_pid()
    path = _recorded(tmp_path, pid=pid, host="", end=False)
    buf = io.StringIO()
    assert follow_headless(path, poll=0.01, owner_every=0.01, console=Console(file=buf, soft_wrap=True)) == EXIT_DEAD
    assert f"(pid {pid}) is gone and a never ended: dead session" in buf.getvalue()


def test_follow_headless_of_another_hosts_session_follows_until_its_runs_end(tmp_path):
    from sgtui.headless import follow_headless

    path = _recorded(tmp_path, pid=_gone_pid(), host="elsewhere.invalid", end=True)
    buf = io.StringIO()
    assert follow_headless(path, poll=0.01, owner_every=0.01, console=Console(file=buf, soft_wrap=True)) == 0
    assert "written on elsewhere.invalid: whether its sgtui is alive cannot be checked" in buf.getvalue()
