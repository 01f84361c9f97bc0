"""Checks before anything starts; each failure is one line saying what to do.

Leftover engine servers are recognised only by the markers the runner puts
into every child's environment (`SGTUI_RUN`, `SGTUI_OWNER_PID`): a process
without them is never reported or touched, whatever its name.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

from sgtui import gpu, pkgpath, portlock, procinfo
from sgtui.childproc import MARKER_OWNER, MARKER_RUN, group_alive, port_free
from sgtui.config import RunConfig

IMPORT_NAME = {"vllm": "vllm", "sglang": "sglang"}


@dataclass(frozen=True)
class Check:
    """One preflight line: what was checked, whether it passed, what was found, and what to do if not."""

    name: str
    ok: bool
    message: str
    fix: str = ""


CheckResult = Check  # the name the UI's preflight panel and the brief use


@dataclass(frozen=True)
class Leftover:
    pid: int
    pgid: int
    run: str
    owner_pid: int
    cmdline: str


def engine_version(python: str, backend: str, device: str = "cuda", timeout: float = 90.0) -> tuple[bool, str]:
    """Import the engine in its venv (as the runner will); (ok, version or the last error line)."""
    mod = IMPORT_NAME[backend]
    code = f"import importlib.metadata as m, {mod}; print(getattr({mod}, '__version__', '') or m.version('{mod}'))"
    path = pkgpath.child_pythonpath(os.environ.get("PYTHONPATH", ""))  # as the orchestrator starts the runner
    if backend == "sglang" and device == "cpu":  # as the engine launches it: with the CPU compat layer
        path = str(pkgpath.package_dir() / "runner" / "cpu_compat") + os.pathsep + path
    try:
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONPATH": path})
    except FileNotFoundError:
        return False, f"{python} not found"
    except subprocess.TimeoutExpired:
        return False, f"importing {mod} took more than {timeout:.0f} s"
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        return False, lines[-1] if lines else f"exit code {r.returncode}"
    return True, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "?"


_MARKERS = (MARKER_OWNER, MARKER_RUN)


def _is_leftover(pid: int, marks: dict[str, str]) -> int | None:
    """Owner pid if this marked process outlived the sgtui process that started it, else None.

    The owner counts as alive only if a process with its pid exists AND started no later than this one:
    an owner pid reused by an unrelated newer process does not keep a leftover alive."""
    try:
        owner = int(marks[MARKER_OWNER])
    except (KeyError, ValueError):
        return None
    if owner == os.getpid():
        return None
    mine, theirs = procinfo.start_time(pid), procinfo.start_time(owner)
    if theirs is not None and (mine is None or theirs <= mine):
        return None  # its owner is alive
    return owner


def _made_by_setup(python: str) -> bool:
    """An engine venv of `sgtui setup` (under the sgtui cache), which re-running the setup repairs; a user's
    own interpreter is theirs to fix, and telling them to re-run our setup sends them the wrong way."""
    return _under_cache(Path(python), "venvs")


def _under_cache(path: Path, sub: str) -> bool:
    cache = Path(os.environ.get("SGTUI_CACHE", str(Path.home() / ".cache" / "sgtui"))) / sub
    try:
        return path.absolute().is_relative_to(cache.absolute())
    except (OSError, ValueError):
        return False


def find_leftovers() -> list[Leftover]:
    """Processes carrying sgtui's marker whose owning sgtui/runner process is gone.

    Only the environment markers count; names and command lines are never matched."""
    found = []
    for pid, marks in procinfo.with_env(_MARKERS, skip=(os.getpid(),)):
        owner = _is_leftover(pid, marks)
        if owner is None:
            continue
        pgid = procinfo.pgid(pid)
        if pgid is None:
            continue
        cmd = " ".join(procinfo.cmdline(pid) or [])
        found.append(Leftover(pid, pgid, marks.get(MARKER_RUN, ""), owner, cmd[:200]))
    return found


def cleanup_leftovers(found: list[Leftover], grace: float = 10.0) -> list[str]:
    """Stop leftovers by process group (SIGTERM, grace, SIGKILL); returns one line per action taken.

    Everything is checked again right before signalling (time passes while a user decides): a group is
    signalled as a whole only if every member still carries the marker of a dead owner; otherwise only
    the marked leftover processes themselves are. Our own group is never touched."""
    import time

    done: list[str] = []
    current = {(x.pid, x.pgid) for x in find_leftovers()}
    groups: list[int] = []
    singles: list[int] = []
    for g in sorted({f.pgid for f in found}):
        if g <= 1 or g == os.getpgrp():
            continue
        marked = [f.pid for f in found if f.pgid == g and (f.pid, g) in current]
        if not marked:
            continue  # gone meanwhile (or its pid reused): leave it alone
        members = procinfo.group_members(g)
        clean = all((m := procinfo.env_values(p, _MARKERS)) and _is_leftover(p, m) is not None for p in members)
        if clean:
            groups.append(g)
        else:
            singles.extend(marked)
            done.append(f"group {g} also holds processes without the sgtui marker: stopping only pids "
                        f"{', '.join(map(str, marked))}")
    for g in groups:
        _kill(lambda s, g=g: os.killpg(g, s), signal.SIGTERM)
    for p in singles:
        _kill(lambda s, p=p: os.kill(p, s), signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive_g, alive_p = list(groups), list(singles)
    while (alive_g or alive_p) and time.monotonic() < deadline:
        time.sleep(0.1)
        alive_g = [g for g in alive_g if group_alive(g)]
        alive_p = [p for p in alive_p if procinfo.alive(p)]
    for g in alive_g:
        _kill(lambda s, g=g: os.killpg(g, s), signal.SIGKILL)
    for p in alive_p:
        _kill(lambda s, p=p: os.kill(p, s), signal.SIGKILL)
    done += [f"stopped process group {g}" + (" (SIGKILL)" if g in alive_g else "") for g in groups]
    done += [f"stopped pid {p}" + (" (SIGKILL)" if p in alive_p else "") for p in singles]
    return done


def _kill(send, sig: int) -> None:
    try:
        send(sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_checks(runs: list[RunConfig], sessions_dir: Path, check_imports: bool = True) -> list[Check]:
    checks: list[Check] = []
    flags = {}
    for r in runs:
        if not r.external_url:  # an external server's port is its owner's
            flags.setdefault((r.host, r.port), set()).add(f"--{r.backend}-port")
    for (host, port), names in sorted(flags.items()):
        taken = portlock.holder(port)  # another sgtui's session uses it, maybe before its engine bound it
        if taken:
            checks.append(Check(f"port {port}", False, taken,
                                f"wait for it, `sgtui stop {portlock.session_hint(port)}`, or pick another "
                                f"{'/'.join(sorted(names))}"))
            continue
        ok = port_free(port, host)
        checks.append(Check(f"port {port}", ok, "free" if ok else f"{host}:{port} is in use",
                            "" if ok else f"stop what listens there or pick another {'/'.join(sorted(names))}"))
    seen: set[tuple[str, str]] = set()
    for r in runs:
        key = (r.backend, r.python)
        if key in seen:
            continue
        seen.add(key)
        ours = _made_by_setup(r.python)
        if not Path(r.python).exists():
            checks.append(Check(f"{r.backend} venv", False, f"{r.python} not found",
                                f"run `sgtui setup` or pass --{r.backend}-python" if ours else
                                f"pass an existing interpreter (--{r.backend}-python or --run ...@PYTHON)"))
            continue
        if check_imports:
            ok, what = engine_version(r.python, r.backend, r.device)
            fix = ("re-run `sgtui setup` (the venv is incomplete)" if ours else
                   f"install {r.backend} into {r.python} (`{r.python} -m pip install {r.backend}`) or pass another")
            checks.append(Check(f"{r.backend} venv", ok, f"{r.backend} {what}" if ok else f"cannot import {r.backend}: {what}",
                                "" if ok else fix))
    for ref in sorted({r.model for r in runs if r.model}):
        checks.append(_check_hub_model(ref) if _is_unresolved_hub_id(ref) else _check_model(Path(ref)))
    try:
        sessions_dir.mkdir(parents=True, exist_ok=True)
        probe = sessions_dir / f".sgtui-preflight-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        checks.append(Check("sessions dir", True, str(sessions_dir)))
    except OSError as e:
        checks.append(Check("sessions dir", False, f"{sessions_dir} not writable ({e.strerror or e})",
                            "pass --output DIR with a writable directory"))
    checks += check_syncs(runs, probe=check_imports)
    checks += check_external(runs)
    if any(r.device == "cuda" for r in runs):
        checks += _check_gpus(runs)
    left = find_leftovers()
    checks.append(Check("leftover servers", not left,
                        "none" if not left else "; ".join(f"pid {x.pid} (run {x.run}, pgid {x.pgid})" for x in left),
                        "" if not left else "`sgtui cleanup` stops them by process group (or accept the UI's "
                                            "cleanup)"))
    return checks


#: Read in the engine's venv without importing the engine (find_spec of a top-level package runs none of it):
#: the routes and functions a full-weight sync calls, as the installed version's source has them.
_SYNC_FACTS = r"""
import importlib.util as u, json, os, sys
name = sys.argv[1]
spec = u.find_spec(name)
root = os.path.dirname(spec.origin) if spec and spec.origin else ""
def has(rel, text):
    p = os.path.join(root, rel)
    try:
        return text in open(p, encoding="utf-8").read()
    except OSError:
        return False
if name == "vllm":
    ipc = os.path.join(root, "distributed", "weight_transfer", "ipc_engine.py")
    facts = {"disk": has("v1/worker/gpu_model_runner.py", "weights_path"),
             "ipc": os.path.isfile(ipc) and any(has(r, '"/update_weights"') for r in (
                 "entrypoints/serve/dev/rlhf/api_router.py", "entrypoints/rl/online/api_router.py")),
             "ipc_needs_ray": has("distributed/weight_transfer/ipc_engine.py", "\nimport ray")
                              and u.find_spec("ray") is None}
else:
    facts = {"disk": has("srt/entrypoints/http_server.py", '"/update_weights_from_disk"'),
             "ipc": has("srt/entrypoints/http_server.py", '"/update_weights_from_tensor"')}
print(json.dumps(facts))
"""


def sync_facts(python: str, backend: str, timeout: float = 60.0) -> dict:
    """What the engine version in `python`'s venv offers for full-weight syncs ({} when it cannot be told)."""
    try:
        r = subprocess.run([python, "-c", _SYNC_FACTS, IMPORT_NAME[backend]], capture_output=True, text=True,
                           timeout=timeout)
        return orjson.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else {}
    except (OSError, subprocess.TimeoutExpired, orjson.JSONDecodeError):
        return {}


def sync_refusal(r: RunConfig, facts: dict | None) -> str:
    """Why this run's full-weight sync cannot run here ("" when it can); one line. `facts`: sync_facts of its
    venv (None: not probed, only what the configuration alone decides)."""
    from sgtui.config import FULL_SYNCS

    if r.sync not in FULL_SYNCS:
        return ""
    name = f"{r.backend} +{r.sync}"
    if r.sync == "ipc":
        if r.placement != "shared":
            return f"{name} hands over handles to the trainer's memory on the same GPUs: --placement shared only"
        if (r.train_tp or r.tp) != r.tp:
            return f"{name} needs one trainer rank per engine rank on the same GPU: --train-tp {r.tp} (or 0)"
        if r.backend == "vllm" and r.device != "cuda":
            return f"{name}: vLLM's IPC weight transfer rebuilds CUDA tensors only; on CPU use +disk"
    if facts is None:
        return ""
    if not facts:
        return f"{name}: could not read what the installed {r.backend} offers (its venv: {r.python})"
    if not facts.get(r.sync):
        what = {("vllm", "disk"): "reload_weights with a weights_path", ("vllm", "ipc"): "the IPC weight-transfer "
                "API over HTTP", ("sglang", "disk"): "/update_weights_from_disk",
                ("sglang", "ipc"): "/update_weights_from_tensor"}[(r.backend, r.sync)]
        return f"{name}: the installed {r.backend} has no {what}"
    if r.sync == "ipc" and facts.get("ipc_needs_ray"):
        return f"{name}: this vLLM's IPC weight transfer imports ray at module level and ray is not installed"
    return ""


def check_syncs(runs: list[RunConfig], probe: bool = True) -> list[Check]:
    """One line per run whose full-weight sync (+disk, +ipc) this engine version, device or placement lacks:
    such a run is refused, never faked."""
    from sgtui.config import FULL_SYNCS

    out: list[Check] = []
    facts: dict[tuple[str, str], dict] = {}
    for r in runs:
        if r.sync not in FULL_SYNCS:
            continue
        f = None
        if probe and Path(r.python).exists():
            f = facts.setdefault((r.backend, r.python), sync_facts(r.python, r.backend))
        why = sync_refusal(r, f)
        out.append(Check(f"{r.label} sync", not why, why or f"{r.backend} +{r.sync} available",
                         "" if not why else "pick another sync (--run BACKEND:STRATEGY+SYNC) or engine version"))
    return out


def check_external(runs: list[RunConfig]) -> list[Check]:
    """One line per run on a server someone else started (--vllm-url/--sglang-url): it answers as its engine,
    and allows the run's strategy and sync (sgtui/external.py; the runner refuses with the same line)."""
    from sgtui import external

    out: list[Check] = []
    servers: dict[tuple[str, str], external.Server | str] = {}
    for r in runs:
        if not r.external_url:
            continue
        key = (r.backend, r.external_url)
        if key not in servers:
            try:
                servers[key] = external.probe(r.backend, r.external_url, timeout=min(10.0, r.server_timeout))
            except external.ExternalError as e:
                servers[key] = str(e)
        srv = servers[key]
        if isinstance(srv, str):
            out.append(Check(f"{r.label} server", False, srv, f"start the server, or fix --{r.backend}-url"))
            continue
        why = external.refusal(r.label, r.backend, r.strategy, r.sync, srv)
        out.append(Check(f"{r.label} server", not why, why or srv.describe(),
                         "" if not why else f"pick a strategy and sync the server allows (--run {r.backend}:...)"))
    return out


def _check_gpus(runs: list[RunConfig]) -> list[Check]:
    """Enough free memory on every chosen device for the most demanding run that uses it."""
    devs = {d.index: d for d in gpu.list_devices()}
    if not devs:
        return [Check("GPUs", False, gpu.nvml_error() or "no NVIDIA GPU found",
                      "install the NVIDIA driver, or run on CPU (the CPU engine venvs)")]
    need: dict[int, tuple[float, str]] = {}
    for r in runs:
        if r.device != "cuda" or r.external_url:  # an external server holds its memory already
            continue
        for g in dict.fromkeys([*r.gpus, *r.train_gpus]):
            d = devs.get(g)
            mib = r.gpu_memory_utilization * d.total_mib if d else 0.0
            if g not in need or mib > need[g][0]:
                need[g] = (mib, r.label)
    out = []
    for g, (mib, label) in sorted(need.items()):
        d = devs.get(g)
        if d is None:
            out.append(Check(f"GPU {g}", False, f"no such device (this machine has {', '.join(map(str, devs))})",
                             "check --gpus/--train-gpus"))
            continue
        ok = d.free_mib >= mib * 0.95
        out.append(Check(f"GPU {g}", ok, f"{d.name}: {d.free_mib:.0f} of {d.total_mib:.0f} MiB free",
                         "" if ok else f"{label} needs ~{mib:.0f} MiB: free the GPU (`nvidia-smi`) or lower "
                                       "--gpu-memory-utilization"))
    return out


def _is_unresolved_hub_id(ref: str) -> bool:
    from sgtui.models import is_hub_id

    return not Path(ref).expanduser().exists() and is_hub_id(ref)


def _check_hub_model(ref: str) -> Check:
    """A hub id the runs have not resolved yet (the launch form's): is it in the local Hugging Face cache?
    Never downloads; resolved (and if need be downloaded) once when the runs start (sgtui.models)."""
    from sgtui.config import ConfigError
    from sgtui.models import ModelNotCached, hub_cache_dir, hub_offline, resolve_model

    try:
        return Check("model", True, f"{ref}: cached at {resolve_model(ref, local_only=True).path}")
    except ModelNotCached:
        if not hub_offline():
            return Check("model", True, f"{ref}: not in the Hugging Face cache yet, downloaded when the runs start")
        return Check("model", False, f"{ref}: not in the Hugging Face cache {hub_cache_dir()} and HF_HUB_OFFLINE "
                     "is set", f"`huggingface-cli download {ref}` (same HF_HOME), unset HF_HUB_OFFLINE, or pass "
                     "--model DIR")
    except ConfigError as e:
        return Check("model", False, str(e), "pass --model DIR with a Hugging Face model directory, or a hub id")


def _check_model(model: Path) -> Check:
    model = model.expanduser()
    if not model.is_dir():
        if _under_cache(model, "models"):  # the built-in tiny model, which `sgtui setup` builds
            return Check("model", False, f"{model}: not built yet", "run `sgtui setup` (it builds the tiny "
                                                                    "built-in model) or pass --model DIR")
        return Check("model", False, f"{model}: no such directory", "pass --model DIR with a Hugging Face model "
                                                                    "directory (config.json, tokenizer, weights)")
    try:
        with open(model / "config.json", "rb") as f:
            orjson.loads(f.read())
    except FileNotFoundError:
        return Check("model", False, f"{model}: no config.json", "pass --model DIR with a Hugging Face model "
                                                                 "directory (config.json, tokenizer, weights)")
    except OSError as e:
        return Check("model", False, f"{model}/config.json not readable ({e.strerror or e})",
                     "fix the file permissions or pass another --model")
    except orjson.JSONDecodeError as e:
        return Check("model", False, f"{model}/config.json is not valid JSON ({e})", "pass another --model")
    return Check("model", True, str(model))
