"""Port locks are host-wide: a second user's sgtui sees the first one's lock and names it."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from sgtui import portlock


def test_default_folder_is_host_wide_not_per_user(monkeypatch):
    monkeypatch.delenv("SGTUI_LOCK_DIR", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    assert portlock.lock_dir() == Path(tempfile.gettempdir()) / "sgtui-locks"


def test_folder_and_files_are_open_to_every_user(monkeypatch, tmp_path):
    d = tmp_path / "locks"
    monkeypatch.setenv("SGTUI_LOCK_DIR", str(d))
    old = os.umask(0o077)  # a strict umask must not make the locks private
    try:
        locks = portlock.acquire([45123], "sessions/a.jsonl")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(d.stat().st_mode) == 0o1777
        assert stat.S_IMODE((d / "port-45123.lock").stat().st_mode) == 0o666
    finally:
        locks.release()


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second user needs root (setuid in a child)")
def test_a_second_user_is_refused_and_told_who_holds_the_port(monkeypatch):
    base = Path(tempfile.mkdtemp(prefix="sgtui-lock-test-"))
    os.chmod(base, 0o755)  # the other user must reach the lock folder
    monkeypatch.setenv("SGTUI_LOCK_DIR", str(base / "locks"))
    locks = portlock.acquire([45124], "sessions/a.jsonl")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: user nobody, taking the same port
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                portlock.acquire([45124], "sessions/b.jsonl")
                msg = "acquired"
            except portlock.PortBusy as e:
                msg = "busy: " + str(e)
            except Exception as e:  # noqa: BLE001 - reported to the parent
                msg = f"error: {e!r}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    locks.release()
    msg = out.decode()
    assert msg.startswith("busy: port 45124 is taken by another sgtui"), msg
    assert f"pid {os.getpid()} of user root" in msg and "session sessions/a.jsonl" in msg, msg
    # and once the first user let go, the second user may take it
    assert portlock.holder(45124) is None
    shutil.rmtree(base, ignore_errors=True)
