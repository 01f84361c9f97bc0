"""Run configuration: the contract between the CLI, the orchestrator and the runner.

The orchestrator hands each runner its `RunConfig` as one JSON argument; the
same dict is stored in the session (`run_start.config`), so a session says
exactly how each run was made. Pure data, no IO.

It is also the one source of defaults: the CLI's options, their `--help` and the launch form read a run
option's default from the `RunConfig` field (`default("num_steps")`), and the few that are not one field
(each backend's port, the small CPU limits, the sessions directory and reports) are constants here. A default
spelled twice drifts: the help said one number while the run used another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson

BACKENDS = ("vllm", "sglang")
#: How the engine gets out of the trainer's way between rollouts, per backend.
STRATEGIES: dict[str, tuple[str, ...]] = {
    "vllm": ("sleep1", "sleep2", "restart", "keep"),
    "sglang": ("release", "restart", "keep"),
}
#: How new weights reach the engine after a train step. `disk` and `ipc` move the full weights (the LoRA
#: merged by the megatron trainer: sgtui/runner/weights.py); whether an engine version and device can do
#: one is preflight's to say (sgtui/preflight.py).
SYNCS: dict[str, tuple[str, ...]] = {
    "vllm": ("lora", "disk", "ipc", "restart", "none"),
    "sglang": ("lora", "disk", "ipc", "restart", "none"),
}
FULL_SYNCS = ("disk", "ipc")
DEFAULT_STRATEGY = {"vllm": "sleep1", "sglang": "release"}
MODES = ("inference", "training")
PLACEMENTS = ("shared", "split")
WORKLOADS = ("synthetic", "jsonl", "multiturn")
TRAINER_LAUNCHES = ("persistent", "per-step")
#: The trainer of a run: `megatron` trains (training mode), `simulated` only holds memory (inference mode).
TRAINERS = ("simulated", "megatron")
#: Each backend's engine port by default: apart, so sequential and concurrent runs of both never meet.
DEFAULT_PORTS: dict[str, int] = {"vllm": 8100, "sglang": 8200}
#: Where sessions are written, and the reports written next to them at the end (`--output`, `--export`).
SESSIONS_DIR = "sessions"
DEFAULT_EXPORTS: tuple[str, ...] = ("txt", "json")
#: On CPU these small limits replace RunConfig's defaults (which are sized for a GPU): the CPU default stays
#: quick on a 2-core machine.
CPU_DEFAULTS: dict[str, int] = {"num_steps": 2, "num_rollouts": 8, "concurrency": 8, "max_input_tokens": 128,
                                "max_output_tokens": 64}


def cuda_env(devices: list[int]) -> dict[str, str]:
    """Environment that pins a child process to these devices, numbered as NVML and nvidia-smi number them.

    CUDA's own default order is fastest-first, which on mixed hosts differs from the PCI order NVML
    uses; without PCI_BUS_ID a child could land on another GPU than the sampler attributes it to.
    """
    if not devices:
        return {}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(str(d) for d in devices)}


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the flag and what was expected."""


@dataclass
class RunConfig:
    label: str
    backend: str
    strategy: str
    sync: str = "lora"
    python: str = ""  # interpreter of the backend's venv (runner runs there)
    model: str = ""  # HF-style model directory (config.json, tokenizer, safetensors); a hub id resolved to its snapshot
    model_id: str = ""  # the hub id the user gave for `model` ("" when they gave a directory); sgtui.models
    served_model_name: str = "policy"
    mode: str = "inference"
    device: str = "cpu"  # cuda | cpu (resolved by the CLI, never "auto" here)
    num_steps: int = 3
    num_rollouts: int = 16
    concurrency: int = 32
    max_input_tokens: int = 1024
    max_output_tokens: int = 1024
    max_model_len: int = 0  # 0: max_input_tokens + max_output_tokens + 64
    tp: int = 1
    gpu_memory_utilization: float = 0.7
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORTS["vllm"]  # each backend's own is DEFAULT_PORTS[backend] (the CLI and form set it)
    gpus: list[int] = field(default_factory=list)  # engine devices (CUDA_VISIBLE_DEVICES of the engine)
    train_gpus: list[int] = field(default_factory=list)  # trainer devices (same as gpus in shared placement)
    placement: str = "shared"
    startup_timeout: float = 600.0
    server_timeout: float = 120.0  # one HTTP control call (sleep, release, load adapter)
    request_timeout: float = 600.0
    warmup_requests: int = 0  # uncounted requests before step 1; 0: one batch at the rollout concurrency
    endpoint: str = "completions"  # completions | chat
    workload: str = "synthetic"
    dataset: str = ""  # JSONL path for workload=jsonl
    seed: int = 0
    group_size: int = 4  # GRPO: rollouts per prompt (num_rollouts = prompts x group_size)
    temperature: float = 1.0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    initial_adapter: str = ""  # PEFT adapter dir loaded at step 0 / used by the simulated trainer
    trainer: str = "simulated"  # simulated | megatron
    trainer_python: str = ""  # megatron trainer interpreter; "": the CPU trainer venv of `sgtui setup`, or the runner's on GPU
    trainer_launch: str = "persistent"  # persistent (one torchrun per run) | per-step (one per step)
    train_tp: int = 0  # trainer ranks (TP degree); 0: the engine's tp
    train_micro_batch: int = 8  # sequences per forward/backward of the megatron trainer (gradients accumulate)
    sync_bucket_mb: int = 512  # full-weight sync (+disk, +ipc): MiB per bucket (a safetensors shard, an IPC buffer)
    sim_train_seconds: float = 2.0
    sim_train_mib: int = 0  # memory the simulated trainer holds on the train GPUs
    learning_rate: float = 1e-4
    kl_coef: float = 0.0
    flush_cache: bool = False
    disable_radix_cache: bool = False
    scrape_interval: float = 1.0
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""  # logs, adapters, trainer files of this run
    external_url: str = ""  # a server someone else started (--vllm-url/--sglang-url): not started or stopped here

    def effective_max_model_len(self) -> int:
        """Headroom of 64 tokens: a prompt re-tokenised by the server or wrapped in a chat template can be a
        little longer than asked, and a context that is too short would silently cut outputs short."""
        return self.max_model_len or (self.max_input_tokens + self.max_output_tokens + 64)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown run config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str | bytes) -> "RunConfig":
        try:
            d = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"run config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"run {self.label}: backend {self.backend!r}, expected one of {', '.join(BACKENDS)}")
        if self.strategy not in STRATEGIES[self.backend]:
            raise ConfigError(
                f"run {self.label}: strategy {self.strategy!r} for {self.backend}, expected one of {', '.join(STRATEGIES[self.backend])}"
            )
        if self.sync not in SYNCS[self.backend]:
            raise ConfigError(f"run {self.label}: sync {self.sync!r} for {self.backend}, expected one of {', '.join(SYNCS[self.backend])}")
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r}: expected inference or training")
        if (self.mode == "training") != (self.trainer == "megatron"):
            raise ConfigError(f"--mode {self.mode} with --trainer {self.trainer}: training mode trains with megatron, "
                              "inference mode holds memory with the simulated trainer")
        if self.train_tp < 0:
            raise ConfigError(f"--train-tp must be 0 (the engine's --tp) or more, got {self.train_tp}")
        if self.trainer_launch not in TRAINER_LAUNCHES:
            raise ConfigError(f"--trainer-launch {self.trainer_launch!r}: expected {' or '.join(TRAINER_LAUNCHES)}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"--placement {self.placement!r}: expected shared or split")
        if self.sync in FULL_SYNCS:
            if self.trainer != "megatron" or self.trainer_launch != "persistent":
                raise ConfigError(f"run {self.label}: +{self.sync} syncs the full weights the megatron trainer "
                                  "merges: it needs --mode training with --trainer-launch persistent")
            if self.sync_bucket_mb < 1:
                raise ConfigError(f"--sync-bucket-mb must be at least 1, got {self.sync_bucket_mb}")
        for name in ("num_steps", "num_rollouts", "concurrency", "max_output_tokens", "tp", "train_micro_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")
        if self.external_url:
            why = external_config_refusal(self.backend, self.strategy, self.sync)
            if why:
                raise ConfigError(f"run {self.label}: {self.backend}:{self.strategy}+{self.sync} with "
                                  f"--{self.backend}-url {self.external_url}: {why}")


def default(name: str) -> Any:
    """The default of RunConfig field `name` (a fresh list or dict where the field has a factory); KeyError for a
    name that is no field, so a renamed field fails where its default is read, not silently."""
    f = _FIELDS[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"RunConfig.{name} has no default")


def defaults() -> dict[str, Any]:
    """Every RunConfig field that has a default, with it (label, backend and strategy have none)."""
    return {name: default(name) for name, f in _FIELDS.items()
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def device_default(name: str, on_gpu: bool) -> Any:
    """The default of `name` on this kind of machine: CPU_DEFAULTS on CPU, RunConfig's otherwise."""
    return default(name) if on_gpu or name not in CPU_DEFAULTS else CPU_DEFAULTS[name]


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def external_config_refusal(backend: str, strategy: str, sync: str) -> str:
    """Why a run cannot measure a server sgtui did not start, whatever that server allows ("" when it may: what
    the server's endpoints allow is sgtui.external's to say, asking the server)."""
    if strategy == "restart":
        return "sgtui cannot restart a server it did not start (use keep, or the server's own offload: " \
               + ("sleep1/sleep2)" if backend == "vllm" else "release)")
    if sync == "restart":
        return "+restart syncs by restarting the server, which sgtui did not start (use +lora or +none)"
    if sync in FULL_SYNCS:
        return f"+{sync} full-weight sync is not supported on an external server (use +lora or +none)"
    return ""


@dataclass(frozen=True)
class RunSpec:
    """A parsed `--run BACKEND:STRATEGY[+SYNC][@PYTHON]`, e.g. `vllm:sleep2`, `sglang:release+lora`,
    `vllm:restart@/opt/venvs/vllm-0.9/bin/python` (two versions of one engine)."""

    backend: str
    strategy: str
    sync: str
    python: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend}-{self.strategy}" + ("" if self.sync == default_sync(self.strategy) else f"-{self.sync}")


def default_sync(strategy: str) -> str:
    """The weight sync a `--run` without `+SYNC` gets: a restart reloads the weights anyway, every other strategy
    loads the trained LoRA (RunConfig's default sync)."""
    return "restart" if strategy == "restart" else default("sync")


def parse_run_spec(text: str) -> RunSpec:
    """Parse one `--run` value; errors name the flag and the accepted values."""
    raw = text.strip()
    python = ""
    if "@" in raw:
        raw, python = raw.split("@", 1)
    backend, _, rest = raw.partition(":")
    backend = backend.strip().lower()
    if backend not in BACKENDS:
        raise ConfigError(f"--run {text!r}: backend {backend!r}, expected one of {', '.join(BACKENDS)} (e.g. vllm:sleep1)")
    strategy, _, sync = rest.partition("+")
    strategy = strategy or DEFAULT_STRATEGY[backend]
    if strategy not in STRATEGIES[backend]:
        raise ConfigError(f"--run {text!r}: strategy {strategy!r}, {backend} supports {', '.join(STRATEGIES[backend])}")
    sync = sync or default_sync(strategy)
    if sync not in SYNCS[backend]:
        raise ConfigError(f"--run {text!r}: weight sync {sync!r}, {backend} supports {', '.join(SYNCS[backend])}")
    return RunSpec(backend=backend, strategy=strategy, sync=sync, python=python)


def unique_labels(labels: list[str]) -> list[str]:
    """Make run labels unique (`vllm-restart`, `vllm-restart-2`) so events can be keyed by label."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        n = seen.get(label, 0) + 1
        seen[label] = n
        out.append(label if n == 1 else f"{label}-{n}")
    return out
