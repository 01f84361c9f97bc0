"""sgtui.procinfo, the one place process questions are answered: real processes, alive, zombie and gone."""

import os
import subprocess
import sys
import time

from sgtui import procinfo

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)", "x y", ""]


def _uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def _gone_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_live_process_answers_every_question(tmp_path):
    held = tmp_path / "held.txt"
    held.write_text("x")
    t0 = time.time()
    p = subprocess.Popen(SLEEP, env={**os.environ, "SGTUI_RUN": "r1"}, start_new_session=True)
    try:
        assert procinfo.alive(p.pid)
        assert abs(procinfo.start_time(p.pid) - t0) < 2.0
        assert procinfo.cmdline(p.pid) == [sys.executable, "-c", "import time; time.sleep(60)", "x y"]  # "" dropped
        assert procinfo.env_values(p.pid, ("SGTUI_RUN", "SGTUI_OWNER_PID")) == {"SGTUI_RUN": "r1"}
        assert procinfo.pgid(p.pid) == p.pid and procinfo.group_members(p.pid) == [p.pid]
        assert p.pid in dict(procinfo.with_env(("SGTUI_RUN",)))
        assert p.pid not in dict(procinfo.with_env(("SGTUI_RUN",), skip=(p.pid,)))
        assert procinfo.holds_open(p.pid, held) is False
        with open(held):
            assert procinfo.holds_open(os.getpid(), tmp_path / "." / "held.txt") is True
        assert procinfo.group_cpu_seconds(p.pid) >= 0.0
        me = procinfo.group_cpu({p.pid}, {os.getpid()})
        assert set(me) == {p.pid, os.getpid()} and me[p.pid].pgid == p.pid
        assert me[os.getpid()].cpu > 0 and 0 < me[p.pid].started <= _uptime() + 1  # seconds after boot
    finally:
        p.kill()
        p.wait()


def test_a_zombie_is_not_alive_and_a_gone_pid_answers_cant_tell():
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while procinfo.alive(z.pid) and time.monotonic() < deadline:  # exited, not reaped: a zombie
            time.sleep(0.02)
        assert not procinfo.alive(z.pid) and procinfo.start_time(z.pid) is not None
    finally:
        z.wait()
    gone = _gone_pid()
    assert not procinfo.alive(gone) and not procinfo.alive(0) and not procinfo.alive(-1)
    assert procinfo.start_time(gone) is None and procinfo.cmdline(gone) is None
    assert procinfo.env_values(gone, ("SGTUI_RUN",)) is None and procinfo.holds_open(gone, "/x") is None
    assert procinfo.pgid(gone) is None and procinfo.group_cpu_seconds(2 ** 22 + 7) == 0.0
