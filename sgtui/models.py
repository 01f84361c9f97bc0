"""`--model`: a local model directory, or a Hugging Face hub id resolved once into the local snapshot directory.

Contract: `resolve_model(ref)` returns a `ResolvedModel(path, model_id)`:
- `ref` names an existing directory: `path` is `ref` as given (it must hold a config.json), `model_id` "";
- otherwise, if `ref` reads as a hub id (`org/name` or `name`): `path` is the snapshot directory of that
  repo in the Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), found
  there first without any network call, downloaded when it is not cached (or cached incompletely) and
  HF_HUB_OFFLINE is not set; `model_id` is `ref`.
Anything else raises `ConfigError`, one line naming `--model` and what to do; a hub id not in the cache
while downloading is not allowed (HF_HUB_OFFLINE, or `local_only`) raises its subclass `ModelNotCached`
(offline: pre-download with `huggingface-cli download ID`, or unset HF_HUB_OFFLINE).
`resolve_runs(runs)` does it for RunConfigs (each distinct model once), setting `model` and `model_id`.

Why once, here: the sgtui process resolves the id before runs are built, so every consumer of
`RunConfig.model` (the prompt builder, which loads tokenizer.json from it to make prompts of exactly
--max-input-tokens tokens; the engines; the trainer) reads the very same files, and no runner inside an
engine venv (each with its own huggingface_hub, HF_HUB_OFFLINE=1 for the servers) resolves or downloads on
its own. `RunConfig.model_id` keeps the user's id for the session and the reports.

huggingface_hub is imported only when a hub id is resolved (a local directory needs nothing); the module
is otherwise pure: no IO besides the hub call and reading whether config.json exists.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sgtui.config import ConfigError

#: A hub repo id: `name` or `org/name`, letters, digits, `-`, `_`, `.`, at most 96 characters
#: (huggingface_hub's validate_repo_id; `--` and `..` are refused there too).
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]{0,95}/)?[A-Za-z0-9][\w.\-]{0,95}$")
#: Files of a repo that no engine or trainer here reads (other frameworks' formats, original checkpoints):
#: never downloaded, so a snapshot holds what vLLM, SGLang and the trainer load (config, tokenizer,
#: safetensors or .bin weights, chat template, remote code).
IGNORE_PATTERNS = ["original/*", "*.pth", "*.gguf", "*.onnx", "*.onnx_data", "onnx/*", "*.h5", "*.msgpack",
                   "*.ot", "*.tflite", "coreml/*", "*.mlmodel", "openvino/*"]
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelNotCached(ConfigError):
    """A hub id that is not (completely) in the local cache while downloading is not allowed."""


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # the directory every consumer reads
    model_id: str = ""  # the hub id the user gave ("" for a local directory)


def is_hub_id(ref: str) -> bool:
    """Whether `ref` reads as a hub repo id rather than a path (`./x`, `/x`, `~/x`, `a/b/c` are paths)."""
    return bool(_REPO_ID.match(ref)) and "--" not in ref and ".." not in ref and not ref.endswith(".")


def hub_offline(env: dict[str, str] | None = None) -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to a true value, as huggingface_hub reads them."""
    env = os.environ if env is None else env
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def hub_cache_dir(env: dict[str, str] | None = None) -> Path:
    """The hub cache huggingface_hub uses, computed from the environment now (its own constant is fixed when
    it is first imported)."""
    env = os.environ if env is None else env
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def resolve_model(ref: str, *, flag: str = "--model", local_only: bool = False,
                  on_download: Callable[[str], None] | None = None) -> ResolvedModel:
    """Resolve `ref` (see the module docstring). `local_only`: never download (preflight asks this way);
    `on_download(message)` is called before a download starts, so the caller can say why it waits."""
    ref = ref.strip()
    if not ref:
        raise ConfigError(f"{flag}: empty, expected a model directory or a hub id such as Qwen/Qwen2.5-7B-Instruct")
    p = Path(ref).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{flag} {ref}: not a directory (expected a Hugging Face model directory or hub id)")
        if not (p / "config.json").is_file():
            raise ConfigError(f"{flag} {ref}: no config.json in that directory")
        return ResolvedModel(path=str(p) if ref.startswith("~") else ref)  # engines get no shell to expand "~"
    if not is_hub_id(ref):
        raise ConfigError(f"{flag} {ref}: no such directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(f"{flag} {ref}: no such directory, and huggingface_hub (needed to resolve a hub id) is "
                          "not installed: `pip install huggingface_hub`, or pass a model directory") from None
    cache = hub_cache_dir()
    offline = hub_offline() or local_only
    path = ""
    why_not_cached = ""
    try:
        path = snapshot_download(ref, cache_dir=str(cache), local_files_only=True, ignore_patterns=IGNORE_PATTERNS)
    except Exception as e:  # noqa: BLE001 - not cached, or cached incompletely (huggingface_hub's own check)
        why_not_cached = _first_line(e)
    if not path:
        if offline:
            incomplete = " (only partly)" if "Incomplete" in why_not_cached else ""
            what = (f"{flag} {ref}: no such directory, and the model is not{incomplete} in the Hugging Face cache "
                    f"{cache}")
            if hub_offline():
                raise ModelNotCached(f"{what} while HF_HUB_OFFLINE is set: download it first (`huggingface-cli "
                                     f"download {ref}` with the same HF_HOME), or unset HF_HUB_OFFLINE, or pass "
                                     f"{flag} DIR")
            raise ModelNotCached(f"{what}: it is downloaded when the runs start")
        if on_download is not None:
            on_download(f"downloading {ref} from the Hugging Face hub into {cache} ...")
        try:
            path = snapshot_download(ref, cache_dir=str(cache), ignore_patterns=IGNORE_PATTERNS)
        except Exception as e:  # noqa: BLE001 - network, gated repo, unknown repo, disk: one line
            raise ConfigError(f"{flag} {ref}: no such directory, and it could not be fetched from the Hugging "
                              f"Face hub ({_first_line(e)}); check the id, HF_TOKEN for gated models, the network, "
                              f"or pass {flag} DIR") from None
    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{flag} {ref}: the hub snapshot {path} has no config.json (not a transformers model?)")
    return ResolvedModel(path=str(path), model_id=ref)


def resolve_runs(runs: list, *, on_download: Callable[[str], None] | None = None) -> None:
    """Resolve every run's `model` in place (each distinct value once): `model` becomes the directory,
    `model_id` the hub id ("" for a directory). A run already resolved (its `model_id` set and its `model`
    an existing directory) is left alone."""
    done: dict[str, ResolvedModel] = {}
    for cfg in runs:
        if cfg.model_id and Path(cfg.model).is_dir():
            continue
        if cfg.model not in done:
            done[cfg.model] = resolve_model(cfg.model, on_download=on_download)
        r = done[cfg.model]
        cfg.model, cfg.model_id = r.path, r.model_id
