"""One sgtui per engine port: advisory locks held by the orchestrator for the whole session.

Why not just check that the port is free: an engine binds its port only after
it loaded the model (tens of seconds on a GPU box), and a session runs its
backends one after another, so a second sgtui started meanwhile sees a free
port, passes preflight, and the two then fight over it mid-run (one engine
fails to bind, or worse, one load generator talks to the other's server).
A lock per port, taken before anything starts, closes that window: the second
sgtui refuses at once and says who holds the port.

`flock` locks belong to the open file description: the kernel drops them when
the holder exits, however it exits (kill -9 included), so a lock never outlives
its sgtui. The file only carries who took it (pid, session) for the message.
Descriptors are close-on-exec: runners and engines do not inherit the lock.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson


def lock_dir() -> Path:
    """Host-wide: ports belong to the host, not to a user, so two users' sgtuis on one GPU box must see each
    other's locks (a folder per user let both start engines on one port). SGTUI_LOCK_DIR overrides it, e.g.
    for tests. The folder is world-writable and sticky, as /tmp: anyone may add a lock, nobody may remove
    another user's."""
    env = os.environ.get("SGTUI_LOCK_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / "sgtui-locks"


def _make_dir(d: Path) -> None:
    if d.is_dir():
        return
    d.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(d, 0o1777)  # mkdir's mode is cut by the umask
    except OSError:
        pass  # another user made it meanwhile: theirs is already 1777


def _open(port: int) -> int:
    """The port's lock file, readable and writable by every user (a lock file another user made 0600 before
    locks were host-wide still locks: flock works on a read-only descriptor; only who holds it goes unsaid)."""
    try:
        fd = os.open(_path(port), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except PermissionError:
        return os.open(_path(port), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o666)  # the umask cut the mode; fails (harmlessly) on another user's file
    except OSError:
        pass
    return fd


class PortBusy(Exception):
    """Another live sgtui holds a port this session needs; the message names it."""


@dataclass
class PortLocks:
    """Locks held by this process; `release()` (or process exit) gives them back."""

    fds: dict[int, int] = field(default_factory=dict)  # port -> fd

    def release(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)  # closing the description drops the flock
            except OSError:
                pass
        self.fds.clear()


def _path(port: int) -> Path:
    return lock_dir() / f"port-{port}.lock"


def _describe(port: int) -> str:
    try:
        info = orjson.loads(_path(port).read_bytes() or b"{}")
    except (OSError, orjson.JSONDecodeError):
        info = {}
    who = f"pid {info['pid']}" if isinstance(info, dict) and info.get("pid") else "another process"
    if isinstance(info, dict) and isinstance(info.get("uid"), int) and info["uid"] != os.getuid():
        try:
            who += f" of user {pwd.getpwuid(info['uid']).pw_name}"
        except KeyError:
            who += f" of uid {info['uid']}"
    session = info.get("session") if isinstance(info, dict) else None
    return f"port {port} is taken by another sgtui ({who}" + (f", session {session})" if session else ")")


def holder(port: int) -> str | None:
    """Why this port is taken by another sgtui (one line), or None if no sgtui holds it. Does not lock."""
    try:
        fd = os.open(_path(port), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return None  # can't tell: the bind check still applies
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(port)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def acquire(ports: list[int], session: str = "") -> PortLocks:
    """Take every port's lock or none; raises PortBusy naming the holder of the first one taken."""
    locks = PortLocks()
    try:
        _make_dir(lock_dir())
    except OSError:
        return locks  # no lock dir (read-only file system): fall back to the bind checks alone
    for port in sorted(set(ports)):
        try:
            fd = _open(port)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            locks.release()
            raise PortBusy(_describe(port) + f"; wait for it, stop it (`sgtui stop {session_hint(port)}`) "
                                             "or pick another port") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, orjson.dumps({"pid": os.getpid(), "session": session, "uid": os.getuid()}))
        except OSError:
            pass  # read-only descriptor (see _open): locked all the same
        locks.fds[port] = fd
    return locks


def session_hint(port: int) -> str:
    try:
        info = orjson.loads(_path(port).read_bytes() or b"{}")
        return str(info.get("session") or "SESSION")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return "SESSION"
