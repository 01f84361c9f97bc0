"""The event schema: one dataclass per kind, encoded and decoded with orjson.

A session file is a sequence of these, one JSON object per line. The file
holds observations only (what happened, when); every number shown anywhere is
derived from them by `sgtui.state`, so better formulas re-score old sessions.

Decoding is on the hot path of replay (a 1M-event session must load at a
good fraction of bare `orjson.loads` speed), so validation is straight-line code
generated once per kind from the dataclasses (see `_compile_builder`).
Nested payloads (GPU devices, engine gauges, configs) stay plain dicts/lists:
they are checked for their container type only. ITL gaps, tens of millions in a
long session, are held as `array("d")` (`Request.__post_init__`).
"""

from __future__ import annotations

import dataclasses
import operator
import struct
import sys
import types
import typing
from array import array
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import orjson

#: Major schema version. A reader refuses files with a larger one; fields added
#: within a major version must have defaults so old files still decode.
SCHEMA = 1

PHASES = (
    "trainer_start",
    "startup",
    "warmup",
    "rollout",
    "offload",
    "train",
    "reload",
    "weight_sync",
    "restart",
    "shutdown",
    "park",  # --interleave: the run's engine put aside (its offload) while another run takes its step; step 0
    "unpark",  # --interleave: the engine back (its reload) before the run's next step; step 0, untimed
)
#: The phases that make up one RL step, in order (startup/warmup/shutdown are not per-step).
STEP_PHASES = ("rollout", "offload", "train", "reload", "weight_sync")
ERROR_CATEGORIES = (
    "OOM",
    "STARTUP_TIMEOUT",
    "PORT_IN_USE",
    "IMPORT_ERROR",
    "SERVER_CRASH",
    "NCCL",
    "MODEL_PATH",
    "REQUEST",
    "TRAINER",
    "TP_IMBALANCE",
    "SERVER_TIMEOUT",
    "CONFIG",
    "WEIGHT_SYNC",  # a full-weight sync failed, timed out, or reported success but changed nothing
    "OTHER",
)
RUN_STATUSES = ("ok", "failed", "cancelled")


class EventError(ValueError):
    """A line that is not a valid event; `lineno` is filled in by the session reader."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        self.message = message
        self.lineno = lineno
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"line {self.lineno}: {self.message}" if self.lineno is not None else self.message


class SchemaTooNew(EventError):
    """The session was written by a newer sgtui; reading on would misinterpret it."""


@dataclass(slots=True)
class Event:
    kind: ClassVar[str] = ""
    t: float


@dataclass(slots=True)
class SessionHeader(Event):
    """First line of every session file."""

    kind: ClassVar[str] = "session"
    schema: int = SCHEMA
    id: str = ""
    created: str = ""  # ISO 8601 UTC
    host: str = ""
    argv: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    sgtui_version: str = ""
    pid: int = 0  # orchestrator pid: lets `sgtui ls` tell a live session from a dead one
    #: seconds between GPU samples as the orchestrator scheduled them (memory peaks and floors are only as
    #: fine as this); 0.0: GPUs not sampled, or a session written before this field existed
    gpu_interval_s: float = 0.0


@dataclass(slots=True)
class RunStart(Event):
    kind: ClassVar[str] = "run_start"
    run: str = ""
    backend: str = ""  # vllm | sglang
    engine_version: str = ""
    model: str = ""
    tp: int = 1
    gpus: list = field(default_factory=list)  # device indices the engine uses
    strategy: str = ""  # e.g. sleep1, sleep2, restart, release, lora
    python: str = ""
    torch: str = ""
    mode: str = "inference"  # inference | training
    device: str = ""  # cuda | cpu
    config: dict = field(default_factory=dict)  # the full run config as given to the runner
    pid: int = 0  # runner pid (its process group owns the engine and trainer)
    engine_argv: list = field(default_factory=list)  # the engine server's full command line, as the run starts it


@dataclass(slots=True)
class Phase(Event):
    """One edge of a phase. step 0 holds the phases outside the RL steps (startup, warmup, shutdown)."""

    kind: ClassVar[str] = "phase"
    run: str = ""
    step: int = 0
    name: str = ""
    edge: str = "start"  # start | end
    ok: bool = True
    detail: str = ""  # free text: strategy detail, "cold"/"warm" start, adapter name, ...
    #: numbers of the phase, on its end edge (weight_sync of a full-weight sync: method, bytes, buckets,
    #: transfer_s, gbps, produce_s, load_s, paused_s, setup_s, changed, update_rel: sgtui/runner/weights.py);
    #: {} for every other phase and in older sessions
    data: dict = field(default_factory=dict)


@dataclass(slots=True)
class Request(Event):
    """One finished request (t is its end). Mirrors vLLM bench's RequestFuncOutput."""

    kind: ClassVar[str] = "request"
    run: str = ""
    step: int = 0
    start: float = 0.0  # Unix time the request was sent
    ttft: float = 0.0  # seconds to the first chunk that carries text
    latency: float = 0.0  # seconds, send to last byte
    #: seconds between consecutive text chunks: a JSON list, held as an `array("d")` (see __post_init__)
    itl: array = field(default_factory=lambda: array("d"))
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str = ""  # empty when the request succeeded
    slot: int = 0  # concurrency slot that sent it (trace tracks)
    model: str = ""  # model/adapter name the request asked for
    served_model: str = ""  # model name the server reported in its answer

    def __post_init__(self) -> None:
        """ITL gaps are held as an `array("d")`, whatever they were given as: a long session holds tens of
        millions (8 bytes each instead of a float object and a pointer, 32: a replay of 1M events read 0.9 s
        faster and 1 GB smaller), and the reductions read them as numpy arrays without a copy."""
        if type(self.itl) is not array:
            self.itl = array("d", self.itl)


@dataclass(slots=True)
class GpuSample(Event):
    """One NVML sample of every device. `error` set and no devices: NVML unavailable."""

    kind: ClassVar[str] = "gpu"
    devices: list = field(default_factory=list)  # {index, name, used_mib, total_mib, util}
    processes: list = field(default_factory=list)  # {pid, device, used_mib, run}
    error: str = ""


@dataclass(slots=True)
class HostSample(Event):
    """The host's CPU over the `window` seconds ending at t (sgtui.host): busy CPUs of those this session may
    run on, and the CPU the session's own processes used, by run label ("sgtui": the orchestrator). Foreign
    load (busy minus own) is derived by the state fold. `error` set: not sampled (no /proc)."""

    kind: ClassVar[str] = "host"
    window: float = 0.0
    cores: int = 0  # CPUs the session may use (scheduler affinity)
    busy_cores: float = 0.0  # mean busy CPUs over the window, whatever ran on them
    own: dict = field(default_factory=dict)  # run label -> mean cores its process groups used
    error: str = ""


@dataclass(slots=True)
class EngineGauges(Event):
    kind: ClassVar[str] = "engine"
    run: str = ""
    step: int = 0
    gauges: dict = field(default_factory=dict)  # kv_usage, running, waiting, prefix_hit_rate, ...


@dataclass(slots=True)
class Train(Event):
    kind: ClassVar[str] = "train"
    run: str = ""
    step: int = 0
    loss: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    adapter_path: str = ""
    peak_mib: list = field(default_factory=list)  # per rank
    reward_mean: float = 0.0
    simulated: bool = False
    #: seconds of the step by part (megatron, persistent: onload = state back onto the GPU, update = the
    #: optimizer steps, export = PEFT adapter written, offload = state out to pinned host memory, other = the
    #: rest of the phase; a per-step launch adds launch = torchrun, imports, model build and load; sessions
    #: before 2026-12-03 have launch, load, update, export); absent in older sessions
    parts: dict = field(default_factory=dict)
    #: train/rollout logprob mismatch over the step's sampled tokens (mean_abs, max_abs, k3, tokens): the
    #: trainer's logprob of each token the engine sampled against the engine's; {} when not measured
    mismatch: dict = field(default_factory=dict)


@dataclass(slots=True)
class Log(Event):
    kind: ClassVar[str] = "log"
    run: str = ""
    source: str = ""  # engine | trainer | runner | orchestrator | stderr
    line: str = ""


@dataclass(slots=True)
class Error(Event):
    kind: ClassVar[str] = "error"
    run: str = ""
    category: str = "OTHER"
    message: str = ""
    log_tail: list = field(default_factory=list)
    step: int = 0
    advice: str = ""


@dataclass(slots=True)
class Proc(Event):
    """A process group the runner started or stopped (engine server, trainer).

    The orchestrator keeps these so that if the runner itself dies (kill -9),
    it can still tear down every group the runner left behind, by group.
    """

    kind: ClassVar[str] = "proc"
    run: str = ""
    role: str = ""  # engine | trainer
    pid: int = 0
    pgid: int = 0
    action: str = "start"  # start | exit
    returncode: int = 0  # with action=exit; negative: killed by that signal
    argv: list = field(default_factory=list)


@dataclass(slots=True)
class RunEnd(Event):
    kind: ClassVar[str] = "run_end"
    run: str = ""
    status: str = "ok"  # ok | failed | cancelled
    detail: str = ""


EVENT_TYPES: tuple[type[Event], ...] = (
    SessionHeader,
    RunStart,
    Phase,
    Request,
    GpuSample,
    EngineGauges,
    Train,
    Log,
    Error,
    Proc,
    RunEnd,
    HostSample,
)
KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in EVENT_TYPES}

AnyEvent = Union[SessionHeader, RunStart, Phase, Request, GpuSample, EngineGauges, Train, Log, Error, Proc, RunEnd,
                 HostSample]

_NUMBER = (int, float)


def _accepted_types(annotation: Any) -> tuple[type, ...]:
    """Map a field annotation to the JSON types accepted for it (an int is a valid float)."""
    if isinstance(annotation, str):
        names = {**vars(typing), "list": list, "dict": dict, "array": array}
        annotation = eval(annotation, names)  # noqa: S307 - own annotations only
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(annotation):
            out += _accepted_types(arg)
        return out
    if annotation is float:
        return _NUMBER
    if annotation is type(None):
        return (type(None),)
    if annotation is array:  # numbers held as array("d"): a JSON list of them (or the field's empty default)
        return (list, array)
    return (origin or annotation,)


_NAMES: dict[str, tuple[str, ...]] = {k: tuple(f.name for f in dataclasses.fields(c)) for k, c in KINDS.items()}
#: Where a request's ITL gaps are among its fields (`pack_events` packs them apart).
_ITL_AT = _NAMES["request"].index("itl")


#: Readers of each kind's fields, in order (`pack_events`).
_READERS: dict[type, list[Any]] = {c: [operator.attrgetter(f.name) for f in dataclasses.fields(c)] for c in EVENT_TYPES}


def pack_events(events: list[Event]) -> tuple:
    """Events as one value to pickle, in columns: a list per field of each kind, a request's ITL gaps as one
    buffer. The helper that decodes a large session's tail hands its events over this way
    (`sgtui.session_split`). Pickled one by one (as their class and fields, ITL gaps as bytes), each event
    cost a Python call both ways and a pickler memo entry per field object: the replay settled 1.3x later
    (benchmarks/replay_load.py, 4 alternated rounds)."""
    kinds = list(map(type, events))
    parts = []
    for cls in dict.fromkeys(kinds):
        at = [i for i, k in enumerate(kinds) if k is cls]
        these = list(map(events.__getitem__, at))
        cols = [list(map(get, these)) for get in _READERS[cls]]
        itl = None
        if cls is Request:
            gaps = cols[_ITL_AT]
            itl = array("q", map(len, gaps)), b"".join(gaps)
            cols[_ITL_AT] = None
        parts.append((cls, array("q", at), cols, itl))
    return len(events), parts


def unpack_events(packed: tuple) -> list[Event]:
    """The events `pack_events` packed, equal to them, in their order."""
    n, parts = packed
    out: list[Any] = [None] * n
    for cls, at, cols, itl in parts:
        if itl is not None:
            cols[_ITL_AT] = _gaps(*itl)
        for i, e in zip(at.tolist(), map(cls, *cols)):
            out[i] = e
    return out


def _gaps(lens: array, raw: bytes) -> list[array]:
    """The ITL arrays `pack_events` joined: `lens[k]` values each, in order."""
    view = memoryview(raw)
    out = []
    o = 0
    for k in lens.tolist():
        a = array("d")
        a.frombytes(view[o:o + 8 * k])
        o += 8 * k
        out.append(a)
    return out


def to_dict(event: Event) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": event.kind}
    for name in _NAMES[event.kind]:
        d[name] = getattr(event, name)
    return d


def encode(event: Event) -> bytes:
    """One JSON line, newline included."""
    return orjson.dumps(to_dict(event), default=_as_list,
                        option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)


def _as_list(value: Any) -> Any:
    """What orjson cannot write itself: an `array("d")` (Request.itl) as its JSON list."""
    if type(value) is array:
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


#: str fields with a few values each, repeated on most lines: held as one object per value (`sys.intern`),
#: not one per event (a run label is ~60 bytes, and a 1M-event session repeats it a million times).
SHARED = frozenset({"run", "model", "served_model", "name", "edge"})
#: int fields likewise (a step number, token counts: 28 bytes an event each above 256), shared below
#: SHARED_INT_LIMIT (so the table of shared ints stays under ~5 MB whatever is read).
SHARED_INTS = frozenset({"step", "prompt_tokens", "output_tokens"})
SHARED_INT_LIMIT = 1 << 16
_SHARED_INTS: dict[int, int] = {}


def _compile_builder(kind: str) -> Any:
    """Generate a straight-line validator+constructor for one kind.

    Generated code (exact `type(x) in {...}` checks, positional construction)
    runs ~3x faster than a generic loop over field specs, which matters for
    replaying million-event sessions. `type() in` also rejects bools where an
    int is expected, since bool is only a subclass of int.
    """
    cls = KINDS[kind]
    env: dict[str, Any] = {"cls": cls, "fail": _fail, "missing": _missing, "kind": kind, "absurd": _absurd,
                           "nested": _nested, "NUM": _NUMBER, "floats": _floats, "intern": sys.intern,
                           "ints": _SHARED_INTS.setdefault}
    lines = ["def build(d, lineno):"]
    args = []
    for i, f in enumerate(dataclasses.fields(cls)):
        accepted = _accepted_types(f.type)
        env[f"T{i}"] = frozenset(accepted)
        env[f"N{i}"] = accepted
        v = f"v{i}"
        args.append(v)
        if f.default is not dataclasses.MISSING:
            env[f"D{i}"] = f.default
            lines.append(f"    {v} = d.get({f.name!r}, D{i})")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"F{i}"] = f.default_factory
            lines.append(f"    {v} = d.get({f.name!r})")
            lines.append(f"    if {v} is None: {v} = F{i}()")
        else:
            lines.append(f"    if {f.name!r} not in d: missing(kind, {f.name!r}, lineno)")
            lines.append(f"    {v} = d[{f.name!r}]")
        lines.append(f"    if type({v}) not in T{i}: fail(kind, {f.name!r}, N{i}, {v}, lineno)")
        lo, hi = (0.0, TIME_LIMIT) if f.name in ("t", "start") else (-VALUE_LIMIT, VALUE_LIMIT)
        if set(accepted) <= {int, float}:  # the type check above made it a number
            lines.append(f"    if not {lo!r} <= {v} <= {hi!r}: absurd(kind, {f.name!r}, {v}, {hi!r}, lineno)")
        elif set(accepted) & {int, float}:
            lines.append(f"    if type({v}) in NUM and not {lo!r} <= {v} <= {hi!r}: "
                         f"absurd(kind, {f.name!r}, {v}, {hi!r}, lineno)")
        if f.type in (array, "array"):  # a list of numbers, checked as it is packed (`_floats`)
            lines.append(f"    {v} = floats(kind, {f.name!r}, {v}, lineno)")
        elif set(accepted) & {list, dict}:
            lines.append(f"    if {v} and type({v}) in (list, dict): nested(kind, {f.name!r}, {v}, lineno)")
        if f.name in SHARED:  # a str (the type check above): one object for every event that names it
            lines.append(f"    {v} = intern({v})")
        elif f.name in SHARED_INTS:  # an int: likewise, past CPython's own small ints and below a bound
            lines.append(f"    if 256 < {v} < {SHARED_INT_LIMIT}: {v} = ints({v}, {v})")
    lines.append(f"    return cls({', '.join(args)})")
    exec("\n".join(lines), env)  # noqa: S102 - code generated from our own dataclasses
    return env["build"]


def _fail(kind: str, name: str, accepted: tuple[type, ...], value: Any, lineno: int | None) -> None:
    want = " or ".join(t.__name__ for t in accepted)
    raise EventError(f"{kind}.{name}: expected {want}, got {type(value).__name__} {value!r:.60}", lineno)


#: No number sgtui records comes near this (bytes of a 1 TB model are 1e12); a larger one is a corrupt or
#: hand-edited line. Checked when a line is read, so a value like 1e300 is a problem with its line number
#: instead of an OverflowError deep inside a report (1e300 ** 2 overflows a float).
VALUE_LIMIT = 1e15
#: Event times are Unix seconds: 1e10 is the year 2286, beyond which date formatting fails.
TIME_LIMIT = 1e10


def _absurd(kind: str, name: str, value: Any, limit: float, lineno: int | None) -> None:
    raise EventError(f"{kind}.{name}: {value!r:.30} is not a plausible value (expected a finite number "
                     f"{'from 0 ' if limit == TIME_LIMIT else ''}up to {limit:g})", lineno)


def _nested(kind: str, name: str, value: Any, lineno: int | None) -> None:
    """Numbers inside a list or dict field (ITL gaps, gauges, per-device samples), limit-checked the same."""
    items = list(value.values()) if type(value) is dict else value
    try:  # the common case, a list of numbers (ITL gaps): min and max at C speed
        lo = min(items)
        if 0.0 <= lo and sum(items) <= VALUE_LIMIT:  # none negative, so none above their sum (faster than max)
            return
        if not -VALUE_LIMIT <= lo <= max(items) <= VALUE_LIMIT:
            _absurd(kind, name, max(items, key=abs), VALUE_LIMIT, lineno)
        return
    except TypeError:  # strings, dicts or mixed values: one by one
        pass
    for x in items:
        if type(x) in _NUMBER and not -VALUE_LIMIT <= x <= VALUE_LIMIT:
            _absurd(kind, name, x, VALUE_LIMIT, lineno)
        if type(x) in (list, dict) and x:
            _nested(kind, name, x, lineno)


def _floats(kind: str, name: str, value: list | array, lineno: int | None) -> array:
    """A list of numbers as the checked `array("d")` its field holds (ITL gaps: 64 a request, tens of
    millions in a long session).

    Packed by a `struct` of the list's length, which converts each number as `array("d", value)` does
    (ints and bools too) at twice its speed, and checked by the packed values' top bytes: an exponent byte
    below 0x43 means a magnitude below 2**49 (~5.6e14, inside VALUE_LIMIT), which no sign, NaN or infinity
    has. A line that fails this quick test (a non-number, a huge value) takes the full check, which decides
    and words it as before. The list's min and sum and `array("d", list)` took 4.4 us a request, this 1.6
    (a replay of 1M events decodes ~500k requests, in both processes of a split read)."""
    if type(value) is list:
        n = len(value)
        pack = _PACKERS.get(n) or _packer(n)
        try:
            raw = pack(*value)
        except (struct.error, OverflowError):
            raw = None
        if raw is not None and not raw[_TOP::8].translate(None, _SMALL):
            out = array("d")
            out.frombytes(raw)
            return out
        if value:
            _nested(kind, name, value, lineno)
    try:
        return array("d", value)
    except TypeError:
        bad = next((x for x in value if type(x) not in _NUMBER), None)
        raise EventError(f"{kind}.{name}: expected a list of numbers, got {type(bad).__name__} {bad!r:.60}",
                         lineno) from None


#: `struct.pack` of n doubles (native order, as `array("d")` holds them), by n: made on first use.
_PACKERS: dict[int, Any] = {}
#: Where a packed double's byte of sign and top exponent bits is, and the values of it below 2**49 in magnitude.
_TOP = 7 if sys.byteorder == "little" else 0
_SMALL = bytes([*range(0x43), *range(0x80, 0xC3)])


def _packer(n: int) -> Any:
    pack = _PACKERS[n] = struct.Struct(f"{n}d").pack
    return pack


def _missing(kind: str, name: str, lineno: int | None) -> None:
    raise EventError(f"{kind}: missing field {name!r}", lineno)


_BUILDERS: dict[str, Any] = {k: _compile_builder(k) for k in KINDS}


#: The builder of each kind whose events need nothing but their builder (all but the header, whose schema is
#: checked too): `sgtui.session` calls them straight after `orjson.loads`, one call a line instead of three.
PLAIN_BUILDERS: dict[str, Any] = {k: b for k, b in _BUILDERS.items() if k != "session"}


def from_dict(d: Any, lineno: int | None = None) -> Event:
    """Validate a decoded JSON object and build its event. Unknown fields are ignored (forward compatible)."""
    if type(d) is not dict:
        raise EventError(f"expected a JSON object, got {type(d).__name__}", lineno)
    kind = d.get("kind")
    build = _BUILDERS.get(kind)  # type: ignore[arg-type]
    if build is None:
        raise EventError(f"unknown event kind {kind!r} (known: {', '.join(KINDS)})", lineno)
    event = build(d, lineno)
    if kind == "session" and event.schema > SCHEMA:
        raise SchemaTooNew(
            f"session written by a newer sgtui (schema {event.schema}), this one reads up to {SCHEMA}", lineno
        )
    return event


def decode(line: bytes | str, lineno: int | None = None) -> Event:
    try:
        d = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise EventError(f"not valid JSON ({e.args[0] if e.args else e})", lineno) from None
    return from_dict(d, lineno)
