"""Diff the runs being compared before anyone ranks them: what differs besides the engine.

Contract:
    run_profile(label, info, names) -> RunProfile   what one run ran on and with (None = unknown)
    differences(profiles) -> tuple[Difference, ...]  one per aspect with two or more known values
    Difference.caveat() -> str                       "runs differ in device: a on CPU; b on NVIDIA H200 x1"
    blocking(differences) -> tuple[Difference, ...]  the ones that forbid a winner (device, model)
    no_verdict_headline(blocking) -> str             why there is no winner, and the flag that overrides it

Pure: no IO, no Textual. Why it exists: sessions of several machines can be
reported together (`sgtui report a.jsonl b.jsonl`), and nothing in the step
times says that one run had an H100 and the other an H200, another model, or
CUDA graphs off. A verdict is only about the engines when everything else is
equal, so every difference becomes a caveat line, and a different device or
model leaves the runs side by side with no winner (unless --allow-mismatch).

A value a session does not record (older sessions lack config keys, a run
without run_start has no info at all) is unknown, never a difference: an
unknown value cannot show that two runs differ. Engine versions are compared
within one backend only (vLLM against SGLang is the point of the tool; vLLM
0.26 against vLLM 0.32 is a legitimate comparison, but it must be stated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from sgtui.events import RunStart

#: (aspect key, words after "runs differ in", word between a run and its value, forbids a winner)
ASPECTS: tuple[tuple[str, str, str, bool], ...] = (
    ("device", "device", "on", True),
    ("model", "model", "with", True),
    ("workload", "workload", "with", False),
    ("lengths", "prompt/output tokens", "with", False),
    ("concurrency", "concurrency", "at", False),
    ("rollouts", "rollouts per step", "with", False),
    ("memory_fraction", "memory fraction", "at", False),
    ("engine_version", "engine version", "with", False),
    ("graphs", "engine flags", "with", False),
    ("placement", "placement", "with", False),
    ("trainer", "trainer", "with", False),
    ("trainer_launch", "trainer launch", "with", False),
)
BLOCKING = frozenset(key for key, _, _, block in ASPECTS if block)

#: Flags that turn CUDA graphs off: vLLM's --enforce-eager, SGLang's --disable-cuda-graph and its
#: per-phase backends set to disabled (e.g. --cuda-graph-backend-decode=disabled).
_EAGER = re.compile(r"^--(enforce-eager|disable-cuda-graph)(=(true|1))?$|^--cuda-graph[\w-]*=disabled$", re.I)


@dataclass(frozen=True)
class RunProfile:
    """What one run ran on and with, as comparable strings; None where the session does not say."""

    label: str
    backend: str
    values: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Difference:
    """One aspect in which the runs differ: each known value with the runs that had it, in run order."""

    aspect: str
    title: str
    joiner: str
    blocking: bool
    groups: tuple[tuple[str, tuple[str, ...]], ...]  # (value, labels of the runs with that value)

    def caveat(self) -> str:
        """The line reports and the UI print: every run named, so nobody has to guess which is which."""
        return f"runs differ in {self.title}: " + "; ".join(
            f"{', '.join(labels)} {self.joiner} {value}" for value, labels in self.groups)


def _known(v: object) -> bool:
    return v is not None and v != ""


def _num(v: object) -> str | None:
    """Numbers as written in the config (64, 0.5), so 64 and 64.0 compare equal."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    return f"{v:g}"


def _device(info: RunStart, names: Mapping[int, str]) -> str | None:
    """'CPU', or the engine's GPU model(s) and count, e.g. 'NVIDIA H200 x1'. A GPU run whose device names
    were never sampled is unknown: 'cuda x1' next to 'NVIDIA H200 x1' would be a difference nobody saw."""
    if info.device == "cpu":
        return "CPU"
    gpus = [int(i) for i in info.gpus] if info.gpus else list(range(info.tp or 1))
    if info.device != "cuda" and not info.gpus:
        return None
    seen = [names.get(i, "") for i in gpus]
    if not gpus or not all(seen):
        return None
    distinct = list(dict.fromkeys(seen))
    return f"{distinct[0]} x{len(gpus)}" if len(distinct) == 1 else " + ".join(seen)


def _model(info: RunStart, cfg: Mapping[str, object]) -> str | None:
    """The hub id where the user gave one, else the directory the engine loaded."""
    mid = cfg.get("model_id")
    if isinstance(mid, str) and mid:
        return mid
    path = info.model or cfg.get("model")
    return str(path).rstrip("/") or None if path else None


def _graphs(info: RunStart, cfg: Mapping[str, object]) -> str | None:
    """'eager' or 'CUDA graphs' on a GPU, from the flags the engine got; None on CPU (no graphs either
    way) and where neither the config's extra_args nor the engine's command line was recorded."""
    if info.device != "cuda":
        return None
    flags = [str(a) for a in (cfg.get("extra_args") or [])] + [str(a) for a in (info.engine_argv or [])]
    if "extra_args" not in cfg and not info.engine_argv:
        return None
    return "eager (CUDA graphs off)" if any(_EAGER.match(f) for f in flags) else "CUDA graphs"


def run_profile(label: str, info: RunStart | None, names: Mapping[int, str] | None = None) -> RunProfile:
    """Profile one run from its run_start event and its session's GPU device names (index -> name, from
    the GPU samples; the state fold passes them, so this module needs nothing above `events`)."""
    if info is None:
        return RunProfile(label, "", {key: None for key, _, _, _ in ASPECTS})
    cfg: Mapping[str, object] = info.config or {}
    names = names or {}
    workload = cfg.get("workload")
    if _known(workload) and cfg.get("dataset"):
        workload = f"{workload} ({str(cfg['dataset']).rstrip('/').rsplit('/', 1)[-1]})"
    pin, pout = _num(cfg.get("max_input_tokens")), _num(cfg.get("max_output_tokens"))
    trainer = cfg.get("trainer")
    launch = cfg.get("trainer_launch") if trainer == "megatron" else None
    backend = info.backend or str(cfg.get("backend") or "")
    values: dict[str, str | None] = {
        "device": _device(info, names),
        "model": _model(info, cfg),
        "workload": str(workload) if _known(workload) else None,
        "lengths": f"{pin}/{pout}" if pin and pout else None,
        "concurrency": _num(cfg.get("concurrency")),
        "rollouts": _num(cfg.get("num_rollouts")),
        "memory_fraction": _num(cfg.get("gpu_memory_utilization")),
        "engine_version": f"{backend} {info.engine_version}" if backend and info.engine_version else None,
        "graphs": _graphs(info, cfg),
        "placement": str(cfg["placement"]) if _known(cfg.get("placement")) else None,
        "trainer": str(trainer) if _known(trainer) else None,
        "trainer_launch": str(launch) if _known(launch) else None,
    }
    return RunProfile(label, backend, values)


def _groups(pairs: Sequence[tuple[str, str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out: dict[str, list[str]] = {}
    for label, value in pairs:
        out.setdefault(value, []).append(label)
    return tuple((v, tuple(labels)) for v, labels in out.items())


def differences(profiles: Sequence[RunProfile]) -> tuple[Difference, ...]:
    """Every aspect with two or more known values among the runs, in ASPECTS order. Engine versions are
    grouped per backend, so vLLM next to SGLang is no difference and two vLLM versions are."""
    out: list[Difference] = []
    for key, title, joiner, block in ASPECTS:
        if key == "engine_version":
            for backend in dict.fromkeys(p.backend for p in profiles):
                pairs = [(p.label, v) for p in profiles if p.backend == backend
                         and (v := p.values.get(key)) is not None]
                if len({v for _, v in pairs}) > 1:
                    out.append(Difference(key, f"{backend} version", joiner, block, _groups(pairs)))
            continue
        pairs = [(p.label, v) for p in profiles if (v := p.values.get(key)) is not None]
        if len({v for _, v in pairs}) > 1:
            out.append(Difference(key, title, joiner, block, _groups(pairs)))
    return tuple(out)


def blocking(diffs: Sequence[Difference]) -> tuple[Difference, ...]:
    """The differences that make a ranking meaningless: another device or another model measures
    the hardware or the model as much as the engine."""
    return tuple(d for d in diffs if d.blocking)


def _short(aspect: str, value: str) -> str:
    """'NVIDIA H100 80GB HBM3 x1' -> 'H100', '/tmp/m1b' -> 'm1b': enough to tell the runs apart in one line."""
    if aspect == "device":
        name = re.sub(r"\s+x\d+$", "", value).replace("NVIDIA ", "")
        count = re.search(r"x(\d+)$", value)
        short = name.split()[0] if name else value
        return short + (f" x{count.group(1)}" if count and count.group(1) != "1" else "")
    if aspect == "model":
        return value.rstrip("/").rsplit("/", 1)[-1] if value.startswith(("/", ".", "~")) else value
    return value


def no_verdict_headline(block: Sequence[Difference]) -> str:
    """'no verdict: runs on different devices (H100 vs H200); --allow-mismatch to rank anyway'."""
    what = {"device": "on different devices", "model": "with different models"}
    parts = []
    for d in block:
        shown = list(dict.fromkeys(_short(d.aspect, v) for v, _ in d.groups))
        if len(shown) < 2:  # the short forms collide (two H100 variants): say it in full
            shown = [v for v, _ in d.groups]
        parts.append(f"{what.get(d.aspect, 'with different ' + d.title)} ({' vs '.join(shown)})")
    return f"no verdict: runs {' and '.join(parts)}; --allow-mismatch to rank anyway"
