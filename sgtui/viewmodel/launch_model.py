"""The launch form's values, apart from any widget: from CLI runs and the last session, to RunConfigs.

Why separate: the form must offer every run option of the CLI, prefilled from
the flags and from the last session, and turn back into exactly the
`RunConfig`s the CLI would have built. Keeping that mapping free of Textual
lets it be tested directly, and keeps the screen a thin view over it.

Prefill order: the CLI's runs (its defaults plus the flags given), then, for
every option the user did not give on the command line (`explicit`, CLI
parameter names), the value the last session used. A blank form starts from
sgtui.config's defaults (RunConfig's fields, DEFAULT_PORTS, SESSIONS_DIR,
DEFAULT_EXPORTS), the same values the CLI's options default to.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sgtui.export import FORMATS
from sgtui.session import REDACTED
from sgtui.config import (
    BACKENDS,
    DEFAULT_EXPORTS,
    DEFAULT_PORTS,
    DEFAULT_STRATEGY,
    MODES,
    PLACEMENTS,
    STRATEGIES,
    SYNCS,
    TRAINERS,
    WORKLOADS,
    ConfigError,
    SESSIONS_DIR,
    RunConfig,
    RunSpec,
    default,
    parse_run_spec,
    unique_labels,
)

EXPORT_FORMATS = FORMATS  # the export registry: a format added there can be picked here


@dataclass
class BackendRow:
    enabled: bool = True
    strategy: str = ""
    sync: str = default("sync")
    python: str = default("python")
    port: int = default("port")  # from_runs gives each backend its own (DEFAULT_PORTS)


@dataclass(frozen=True)
class FieldSpec:
    name: str  # attribute of LaunchOptions
    label: str
    kind: str  # int | float | str | choice | bool
    choices: tuple[str, ...] = ()
    cli: str = ""  # CLI parameter name (for `explicit`)
    help: str = ""


#: The shared (not per-backend) options, in form order.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("mode", "mode", "choice", MODES, "mode", "inference: simulated trainer; training: megatron-core"),
    FieldSpec("trainer", "trainer", "choice", TRAINERS, "trainer"),
    FieldSpec("model", "model path", "str", cli="model",
              help="HF model directory (config.json, tokenizer, weights) or hub id (org/name)"),
    FieldSpec("num_steps", "RL steps", "int", cli="num_steps"),
    FieldSpec("num_rollouts", "rollouts / step", "int", cli="num_rollouts"),
    FieldSpec("concurrency", "concurrency", "int", cli="concurrency"),
    FieldSpec("max_input_tokens", "max input tokens", "int", cli="max_input_tokens"),
    FieldSpec("max_output_tokens", "max output tokens", "int", cli="max_output_tokens"),
    FieldSpec("tp", "tensor parallel", "int", cli="tp"),
    FieldSpec("gpu_memory_utilization", "GPU memory util", "float", cli="gpu_memory_utilization"),
    FieldSpec("placement", "placement", "choice", PLACEMENTS, "placement"),
    FieldSpec("gpus", "engine GPUs", "str", cli="gpus", help="e.g. 0,1 (empty: automatic)"),
    FieldSpec("train_gpus", "trainer GPUs", "str", cli="train_gpus"),
    FieldSpec("workload", "workload", "choice", WORKLOADS, "workload"),
    FieldSpec("dataset", "dataset (jsonl)", "str", cli="dataset"),
    FieldSpec("sim_train_seconds", "sim train s", "float", cli="sim_train_seconds"),
    FieldSpec("sim_train_mib", "sim train MiB", "int", cli="sim_train_mib"),
    FieldSpec("seed", "seed", "int", cli="seed"),
    FieldSpec("host", "engine host", "str", cli="host"),
    FieldSpec("startup_timeout", "startup timeout s", "float", cli="startup_timeout"),
    FieldSpec("output", "sessions dir", "str", cli="output"),
    FieldSpec("exports", "reports", "str", cli="export", help="comma list of " + ",".join(FORMATS)),
    FieldSpec("concurrent", "runs at once", "bool", help="run the backends at the same time (needs separate GPUs)"),
    FieldSpec("detach", "detach", "bool", help="runs keep going if the UI quits or SSH drops"),
)
#: RunConfig fields the form edits directly (same name).
RUN_FIELDS = ("mode", "trainer", "model", "num_steps", "num_rollouts", "concurrency", "max_input_tokens",
              "max_output_tokens", "tp", "gpu_memory_utilization", "placement", "workload", "dataset",
              "sim_train_seconds", "sim_train_mib", "seed", "host", "startup_timeout")


@dataclass
class LaunchOptions:
    backends: dict[str, BackendRow] = field(default_factory=dict)
    extra_runs: str = ""  # more `--run` specs, comma separated (several strategies of one backend)
    # The run options: RunConfig's defaults (sgtui/config.py), never spelled here.
    mode: str = default("mode")
    trainer: str = default("trainer")
    model: str = default("model")
    num_steps: int = default("num_steps")
    num_rollouts: int = default("num_rollouts")
    concurrency: int = default("concurrency")
    max_input_tokens: int = default("max_input_tokens")
    max_output_tokens: int = default("max_output_tokens")
    tp: int = default("tp")
    gpu_memory_utilization: float = default("gpu_memory_utilization")
    placement: str = default("placement")
    gpus: str = ",".join(str(g) for g in default("gpus"))
    train_gpus: str = ",".join(str(g) for g in default("train_gpus"))
    workload: str = default("workload")
    dataset: str = default("dataset")
    sim_train_seconds: float = default("sim_train_seconds")
    sim_train_mib: int = default("sim_train_mib")
    seed: int = default("seed")
    host: str = default("host")
    startup_timeout: float = default("startup_timeout")
    output: str = SESSIONS_DIR
    exports: str = ",".join(DEFAULT_EXPORTS)
    concurrent: bool = False
    detach: bool = False
    device: str = default("device")  # of this machine, from the CLI; never taken from an old session
    base: dict[str, dict] = field(default_factory=dict)  # backend -> RunConfig dict (fields not on the form)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def from_runs(cls, runs: list[RunConfig], output: str | Path = SESSIONS_DIR,
                  exports: list[str] | tuple = DEFAULT_EXPORTS, ports: dict[str, int] | None = None,
                  pythons: dict[str, str] | None = None) -> "LaunchOptions":
        opts = cls(output=str(output), exports=",".join(exports))
        ports = {**DEFAULT_PORTS, **(ports or {})}
        for b in BACKENDS:
            opts.backends[b] = BackendRow(enabled=False, strategy=DEFAULT_STRATEGY[b],
                                          python=(pythons or {}).get(b, default("python")), port=ports[b])
        extra = []
        for r in runs:
            row = opts.backends[r.backend]
            if not row.enabled and r.backend not in opts.base:
                opts.backends[r.backend] = BackendRow(True, r.strategy, r.sync, r.python, r.port)
                opts.base[r.backend] = r.to_dict()
            else:
                spec = f"{r.backend}:{r.strategy}+{r.sync}"
                if r.python and r.python != row.python:
                    spec += f"@{r.python}"
                extra.append(spec)
        opts.extra_runs = ", ".join(extra)
        if runs:
            first = runs[0]
            for name in RUN_FIELDS:
                setattr(opts, name, getattr(first, name))
            opts.model = first.model_id or first.model  # the hub id the user gave, not its snapshot directory
            opts.gpus = ",".join(str(g) for g in first.gpus)
            opts.train_gpus = ",".join(str(g) for g in first.train_gpus) if first.train_gpus != first.gpus else ""
            opts.device = first.device
        return opts

    def merge_last(self, last: list[RunConfig], explicit: set[str] | frozenset[str] = frozenset(),
                   concurrent: bool | None = None, missing: set[str] | frozenset[str] = frozenset()) -> None:
        """Take the last session's values for every option not given on the command line
        (`missing`: fields the session header does not hold, e.g. redacted ones)."""
        if not last:
            return
        first = last[0]
        for spec in FIELDS:
            if (spec.cli and spec.cli in explicit) or spec.name in missing:
                continue
            if spec.name == "model":
                self.model = first.model_id or first.model
            elif spec.name in RUN_FIELDS:
                setattr(self, spec.name, getattr(first, spec.name))
            elif spec.name == "gpus" and self.device == first.device:
                self.gpus = ",".join(str(g) for g in first.gpus)
            elif spec.name == "train_gpus" and self.device == first.device:
                self.train_gpus = ",".join(str(g) for g in first.train_gpus) if first.train_gpus != first.gpus else ""
        if concurrent is not None:
            self.concurrent = concurrent
        if not ({"backends", "run"} & set(explicit)):
            fresh = LaunchOptions.from_runs(last)
            for b, row in fresh.backends.items():
                mine = self.backends[b]
                mine.enabled, mine.strategy, mine.sync = row.enabled, row.strategy, row.sync
                if row.enabled and f"{b}_python" not in explicit and row.python:
                    mine.python = row.python
                if row.enabled and f"{b}_port" not in explicit:
                    mine.port = row.port
            self.extra_runs = fresh.extra_runs
            for b, d in fresh.base.items():
                self.base.setdefault(b, d)

    def copy(self) -> "LaunchOptions":
        return dataclasses.replace(self, backends={k: dataclasses.replace(v) for k, v in self.backends.items()},
                                   base=dict(self.base))

    def key(self) -> bytes:
        """A stable fingerprint: preflight results belong to the form values they were computed for."""
        return orjson.dumps(dataclasses.asdict(self), option=orjson.OPT_SORT_KEYS)

    # -- to RunConfigs ---------------------------------------------------------------------------
    def export_list(self) -> list[str]:
        out = [f.strip() for f in self.exports.split(",") if f.strip()]
        for f in out:
            if f not in EXPORT_FORMATS:
                raise ConfigError(f"reports: {f!r}, expected a comma list of {', '.join(EXPORT_FORMATS)}")
        return out

    def _ints(self, text: str, what: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"{what}: {text!r}, expected comma-separated device indices, e.g. 0,1") from None

    def to_runs(self) -> list[RunConfig]:
        """The RunConfigs of the form, validated; ConfigError (one line naming the field) otherwise."""
        specs: list[tuple[str, str, str, str, int]] = []  # backend, strategy, sync, python, port
        for b in BACKENDS:
            row = self.backends.get(b)
            if row is not None and row.enabled:
                if not row.python:
                    raise ConfigError(f"{b} python: empty, expected the python of the {b} venv")
                specs.append((b, row.strategy, row.sync, row.python, row.port))
        for raw in [x for x in self.extra_runs.split(",") if x.strip()]:
            spec = parse_run_spec(raw)
            row = self.backends.get(spec.backend) or BackendRow(port=DEFAULT_PORTS[spec.backend])
            python = spec.python or row.python
            if not python:
                raise ConfigError(f"more runs: {raw.strip()!r} needs a python (add @/path/to/python or fill {spec.backend} python)")
            specs.append((spec.backend, spec.strategy, spec.sync, python, row.port))
        if not specs:
            raise ConfigError("backends: none selected, tick vLLM and/or SGLang")
        if not self.model.strip():
            raise ConfigError("model path: empty, expected a model directory or a hub id (org/name)")
        gpus = self._ints(self.gpus, "engine GPUs")
        train_gpus = self._ints(self.train_gpus, "trainer GPUs")
        if self.device == "cuda" and not gpus:
            gpus = list(range(self.tp))
        self.export_list()
        labels = unique_labels([_label(b, s, y) for b, s, y, _, _ in specs])
        runs = []
        for (backend, strategy, sync, python, port), label in zip(specs, labels):
            d = dict(self.base.get(backend) or {})
            d.pop("label", None)
            cfg = RunConfig(label=label, backend=backend, strategy=strategy, **{
                k: v for k, v in d.items() if k in _RUNCONFIG_FIELDS and k not in ("backend", "strategy")})
            cfg.sync = sync
            cfg.python = python
            cfg.port = port
            for name in RUN_FIELDS:
                setattr(cfg, name, getattr(self, name))
            cfg.device = self.device
            cfg.gpus = list(gpus)
            cfg.train_gpus = list(train_gpus or gpus)
            cfg.workdir = ""
            if d.get("model") != self.model:
                cfg.initial_adapter = ""  # belonged to the other model; `resolve_initial_adapter` looks again
                cfg.model_id = ""  # likewise; `resolve_models` sets it again for a hub id
            cfg.validate()
            runs.append(cfg)
        return runs


_RUNCONFIG_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def _label(backend: str, strategy: str, sync: str) -> str:
    return RunSpec(backend, strategy, sync).label  # as the CLI labels its runs


def resolve_models(runs: list[RunConfig]) -> None:
    """As the CLI does, once before the runs start: a hub id becomes its snapshot directory in the Hugging
    Face cache (downloaded if needed and allowed; network and file IO: call from a worker). ConfigError
    (one line) when it cannot be resolved."""
    from sgtui.models import resolve_runs

    resolve_runs(runs)


def resolve_initial_adapter(runs: list[RunConfig]) -> None:
    """As the CLI does: use `<model>/adapters/initial` when it exists (file IO: call from a worker)."""
    for r in runs:
        if not r.initial_adapter:
            p = Path(r.model) / "adapters" / "initial"
            if p.is_dir():
                r.initial_adapter = str(p)


def last_session_runs(directory: str | Path) -> tuple[list[RunConfig], Path | None]:
    runs, path, _ = last_session(directory)
    return runs, path


def last_session(directory: str | Path) -> tuple[list[RunConfig], Path | None, set[str]]:
    """RunConfigs of the newest session in `directory` (its header's config), its path, and the
    fields the header does not really hold (redacted values): ([], None, set()) if none.

    Reads only the first line of each candidate: sessions can be large.
    """
    d = Path(directory)
    try:
        candidates = sorted(d.glob("*.jsonl"), key=lambda p: p.name, reverse=True)
    except OSError:
        return [], None
    for path in candidates[:20]:
        try:
            with path.open("rb") as f:
                line = f.readline()
            head: Any = orjson.loads(line)
        except (OSError, orjson.JSONDecodeError):
            continue
        if not isinstance(head, dict) or head.get("kind") != "session":
            continue
        cfg = head.get("config") or {}
        out = []
        missing: set[str] = set()
        for rd in cfg.get("runs") or []:
            if not isinstance(rd, dict):
                continue
            hidden = {k for k, v in rd.items() if v == REDACTED}
            missing |= hidden
            try:
                out.append(RunConfig(**{k: v for k, v in rd.items() if k in _RUNCONFIG_FIELDS and k not in hidden}))
            except TypeError:
                continue
        if out:
            return out, path, missing
    return [], None, set()


__all__ = ["BackendRow", "FIELDS", "LaunchOptions", "STRATEGIES", "SYNCS", "last_session_runs",
           "resolve_initial_adapter", "resolve_models"]
