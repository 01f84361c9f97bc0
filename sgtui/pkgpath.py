"""The PYTHONPATH entry that lets another interpreter import this `sgtui` package, and nothing else.

Contract: `child_pythonpath(existing)` returns a PYTHONPATH value whose first entry is a directory holding
only a symlink `sgtui` -> this very package, followed by the entries of `existing` (duplicates dropped).
Every place that starts a child interpreter which must run this sgtui code (the runner in an engine venv,
the trainer, the tiny-model builder, preflight's import probe, the detached orchestrator) sets its
PYTHONPATH with it.

Why not the directory above the package: after a normal (non-editable) `pip install`, that directory is
sgtui's whole site-packages, and putting it on an engine venv's PYTHONPATH shadows the engine's own
packages: a venv of another Python then fails on compiled modules built for sgtui's Python (`orjson.orjson`),
and a venv of the same Python silently gets sgtui's httpx, pydantic, ... instead of the versions its engine
pinned. A directory with one symlink exposes the package alone.

The directory lives under sgtui's cache (`$SGTUI_CACHE`, default `~/.cache/sgtui`) at
`pkgpath/<hash of the package's real path>/`, so every process of one installation (the CLI, the runner
inside an engine venv, the trainer it starts) computes and shares the same one; it is (re)made atomically
when missing or stale. If the cache cannot be written, a fresh private temporary directory is used instead.

Code that finds files through `Path(__file__).resolve()` keeps seeing the real package (the symlink
resolves), so the package's `runner/cpu_compat` is still found in it. Standard library only: the
runner imports this inside engine venvs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

_LOCK = threading.Lock()
_made: dict[str, Path] = {}  # package dir + cache -> link dir made (or checked) by this process


def package_dir() -> Path:
    """The real directory of the `sgtui` package this code belongs to (symlinks resolved)."""
    return Path(__file__).resolve().parent


def cache_dir() -> Path:
    """sgtui's per-user cache, as the CLI and `sgtui setup` name it."""
    return Path(os.environ.get("SGTUI_CACHE", str(Path.home() / ".cache" / "sgtui")))


def _link_into(d: Path, pkg: Path) -> None:
    """Make `d/sgtui` a symlink to `pkg`; atomic (symlink under a unique name, then rename over), so
    concurrent sgtui processes never see a half-made or missing link."""
    link = d / "sgtui"
    try:
        if os.readlink(link) == str(pkg):
            return
    except OSError:
        pass
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".sgtui-{os.getpid()}-{threading.get_ident()}"
    try:
        os.symlink(pkg, tmp, target_is_directory=True)
        os.replace(tmp, link)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def link_dir() -> Path:
    """The directory whose only entry is `sgtui` -> this package (made on first use in this process)."""
    pkg = package_dir()
    cache = cache_dir()
    key = f"{pkg}\0{cache}"
    with _LOCK:
        d = _made.get(key)
        if d is not None and (d / "sgtui").exists():
            return d
        d = cache / "pkgpath" / hashlib.sha1(str(pkg).encode()).hexdigest()[:16]
        try:
            _link_into(d, pkg)
        except OSError:
            # A read-only home: a private directory of our own (mkdtemp: nobody else can have planted a link).
            d = Path(tempfile.mkdtemp(prefix="sgtui-pkgpath-"))
            _link_into(d, pkg)
        _made[key] = d
        return d


def child_pythonpath(existing: str | None = "") -> str:
    """PYTHONPATH for a child interpreter: the sgtui-only directory first, then `existing` (the caller's
    PYTHONPATH, e.g. an offline engine install's site directory), empty and repeated entries dropped."""
    entries = [str(link_dir())] + [p for p in (existing or "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(entries))


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with PYTHONPATH set by `child_pythonpath` (from env's own PYTHONPATH); returns env."""
    env["PYTHONPATH"] = child_pythonpath(env.get("PYTHONPATH", ""))
    return env
