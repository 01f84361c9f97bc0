"""`--model` by hub id (sgtui/models.py) against a local Hugging Face cache, with HF_HUB_OFFLINE=1.

The fixture lays the cache out as huggingface_hub writes it (`models--ORG--NAME/blobs/<hash>`,
`snapshots/<commit>/<file>` -> the blob, `refs/main` = the commit) and checks with huggingface_hub's own
`scan_cache_dir` that it reads it as a cached model. Nothing here touches the network: an offline
resolve never asks the hub, and the tests that would need it are the offline error paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgtui import pkgpath
from sgtui.cli import build_runs
from sgtui.config import ConfigError
from sgtui.models import IGNORE_PATTERNS, ModelNotCached, hub_cache_dir, is_hub_id, resolve_model
from tests.engines import TINY, VLLM_PY, needs_vllm

REPO = Path(__file__).resolve().parent.parent
HUB_ID = "sgtui-test/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hub_cache(hub: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Put `files` into the hub cache `hub` as huggingface_hub stores a download; returns the snapshot dir."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache under a tmp HF_HOME, offline; the process's HF variables do not leak in."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    assert hub_cache_dir() == hub
    return hub


@pytest.fixture
def tiny_files() -> dict[str, bytes]:
    """The tiny built-in model's files when setup/ made it (a real tokenizer), else a config + tokenizer stub."""
    if (TINY / "tokenizer.json").is_file():
        return {p.relative_to(TINY).as_posix(): p.read_bytes() for p in TINY.rglob("*") if p.is_file()}
    return {"config.json": b'{"model_type": "llama"}', "tokenizer.json": b"{}"}


def test_a_cached_hub_id_resolves_to_its_snapshot_without_network(hub, tiny_files):
    from huggingface_hub import scan_cache_dir

    snap = add_to_hub_cache(hub, HUB_ID, tiny_files)
    info = scan_cache_dir(hub)  # huggingface_hub reads the fixture as one cached model at our commit
    assert [(r.repo_id, r.repo_type, [x.commit_hash for x in r.revisions]) for r in info.repos] == \
        [(HUB_ID, "model", [COMMIT])]
    r = resolve_model(HUB_ID)
    assert Path(r.path) == snap and r.model_id == HUB_ID
    assert json.loads((Path(r.path) / "config.json").read_text()) == json.loads(tiny_files["config.json"])


def test_an_uncached_hub_id_offline_is_one_line_naming_the_model_and_the_way_out(hub):
    add_to_hub_cache(hub, HUB_ID, {"config.json": b"{}"})  # another model is cached: not this one
    with pytest.raises(ModelNotCached) as e:
        resolve_model("Qwen/Qwen2.5-7B-Instruct")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--model Qwen/Qwen2.5-7B-Instruct: ")
    assert "HF_HUB_OFFLINE" in msg and "huggingface-cli download Qwen/Qwen2.5-7B-Instruct" in msg
    assert str(hub) in msg


def test_the_cli_says_it_in_one_line(hub, tmp_path):
    r = subprocess.run([sys.executable, "-m", "sgtui.cli", "--no-ui", "--run", f"vllm@{sys.executable}",
                        "--model", "nobody/no-such-model", "-o", str(tmp_path / "s")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60, env=dict(os.environ))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("sgtui: error: --model nobody/no-such-model: ") and "HF_HUB_OFFLINE" in lines[0]


def test_a_snapshot_without_config_is_refused(hub):
    add_to_hub_cache(hub, HUB_ID, {"tokenizer.json": b"{}"})
    with pytest.raises(ConfigError, match="has no config.json"):
        resolve_model(HUB_ID)


def test_local_directories_and_paths_are_not_hub_ids(tmp_path, hub, monkeypatch):
    d = tmp_path / "org" / "name"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)  # "org/name" exists here as a directory: a local dir wins over a hub id
    assert resolve_model("org/name").path == "org/name" and resolve_model("org/name").model_id == ""
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ConfigError, match=r"no such directory$"):
        resolve_model(str(tmp_path / "gone"))
    assert is_hub_id("Qwen/Qwen2.5-7B-Instruct") and is_hub_id("gpt2")
    assert not any(is_hub_id(x) for x in ("./m", "/m", "~/m", "a/b/c", "a--b/c", "a/../b", ""))
    assert "original/*" in IGNORE_PATTERNS  # never downloaded: no engine here reads original checkpoints


def test_build_runs_carries_the_snapshot_dir_and_keeps_the_id(hub, tiny_files, tmp_path):
    snap = add_to_hub_cache(hub, HUB_ID, tiny_files)
    runs = build_runs(backends="vllm,sglang", run=[], mode="inference", model=HUB_ID, on_gpu=False, overrides={},
                      vllm_python=sys.executable, sglang_python=sys.executable, vllm_port=8100, sglang_port=8200,
                      output=tmp_path, gpus=[], train_gpus=[], placement="shared")
    assert [Path(r.model) for r in runs] == [snap, snap] and {r.model_id for r in runs} == {HUB_ID}
    assert runs[0].to_dict()["model_id"] == HUB_ID  # what run_start's config stores
    if (snap / "adapters" / "initial").is_dir():  # the tiny model's initial adapter is found in the snapshot
        assert runs[0].initial_adapter == str(snap / "adapters" / "initial")
    with pytest.raises(ConfigError, match="--model nobody/none: "):
        build_runs(backends="vllm", run=[], mode="inference", model="nobody/none", on_gpu=False, overrides={},
                   vllm_python=sys.executable, sglang_python=None, vllm_port=8100, sglang_port=8200,
                   output=tmp_path, gpus=[], train_gpus=[], placement="shared")


def test_the_launch_form_resolves_a_hub_id_and_shows_the_id(hub, tiny_files, tmp_path):
    from sgtui.viewmodel.launch_model import LaunchOptions, resolve_models

    snap = add_to_hub_cache(hub, HUB_ID, tiny_files)
    runs = build_runs(backends="vllm", run=[], mode="inference", model=HUB_ID, on_gpu=False, overrides={},
                      vllm_python=sys.executable, sglang_python=None, vllm_port=8100, sglang_port=8200,
                      output=tmp_path, gpus=[], train_gpus=[], placement="shared")
    opts = LaunchOptions.from_runs(runs)
    assert opts.model == HUB_ID  # the form shows what the user typed, not the snapshot path
    again = opts.to_runs()
    resolve_models(again)
    assert Path(again[0].model) == snap and again[0].model_id == HUB_ID
    local = tmp_path / "local"
    local.mkdir()
    (local / "config.json").write_text("{}")
    opts.model = str(local)
    other = opts.to_runs()
    resolve_models(other)
    assert other[0].model == str(local) and other[0].model_id == ""  # the old id does not stick


def test_preflight_checks_a_hub_id_in_the_cache(hub, tiny_files, tmp_path, monkeypatch):
    from sgtui import preflight
    from sgtui.config import RunConfig

    def check(model: str):
        cfg = RunConfig(label="x", backend="vllm", strategy="sleep1", python=sys.executable, model=model, port=1)
        return {c.name: c for c in preflight.run_checks([cfg], tmp_path, check_imports=False)}["model"]

    snap = add_to_hub_cache(hub, HUB_ID, tiny_files)
    c = check(HUB_ID)
    assert c.ok and str(snap) in c.message
    c = check("nobody/none")
    assert not c.ok and "HF_HUB_OFFLINE" in c.message and "huggingface-cli download nobody/none" in c.fix
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online: not cached yet is fine, it is downloaded at start
    c = check("nobody/none")
    assert c.ok and "downloaded when the runs start" in c.message


@needs_vllm
def test_prompts_from_a_hub_id_have_exactly_max_input_tokens_of_its_tokenizer(hub, tiny_files, tmp_path):
    """The prompt builder runs in the runner (an engine venv, which has `tokenizers`), on RunConfig.model."""
    snap = add_to_hub_cache(hub, HUB_ID, tiny_files)
    runs = build_runs(backends="vllm", run=[], mode="inference", model=HUB_ID, on_gpu=False,
                      overrides={"max_input_tokens": 77, "num_rollouts": 8}, vllm_python=str(VLLM_PY),
                      sglang_python=None, vllm_port=8100, sglang_port=8200, output=tmp_path, gpus=[],
                      train_gpus=[], placement="shared")
    assert Path(runs[0].model) == snap
    code = (
        "import sys, json\n"
        "from tokenizers import Tokenizer\n"
        "from sgtui.config import RunConfig\n"
        "from sgtui.runner.workload import build_prompts\n"
        "cfg = RunConfig.from_json(sys.argv[1])\n"
        "tok = Tokenizer.from_file(cfg.model + '/tokenizer.json')\n"
        "ps = build_prompts(cfg, cfg.model)\n"
        "print(json.dumps([len(tok.encode(p.text, add_special_tokens=False).ids) for p in ps]))\n"
    )
    env = {**os.environ, "PYTHONPATH": pkgpath.child_pythonpath("")}
    r = subprocess.run([str(VLLM_PY), "-c", code, runs[0].to_json()], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == [77] * 8


def test_an_exact_cut_survives_a_round_trip_that_merges_tokens():
    """Decode then encode is not the identity when a cut splits what the tokenizer merges: the cut moves."""
    from sgtui.runner.workload import _exact_cut

    class Merging:  # greedy longest match over {"a", "b", "ab"}: ids [a, b, a, b, ...] re-encode as "ab" tokens
        vocab = {0: "a", 1: "b", 2: "ab"}

        def decode(self, ids):
            return "".join(self.vocab[i] for i in ids)

        def encode(self, text, add_special_tokens=False):
            out, i = [], 0
            while i < len(text):
                n = 2 if text[i:i + 2] == "ab" else 1
                out.append({"a": 0, "b": 1, "ab": 2}[text[i:i + n]])
                i += n
            return type("Enc", (), {"ids": out})()

    tok = Merging()
    text = _exact_cut(tok, [0, 1] * 20, 3)
    assert len(tok.encode(text).ids) == 3 and tok.decode([0, 1] * 20)[:3] != text


def test_huggingface_hub_is_imported_only_to_resolve_a_hub_id(tmp_path):
    """Importing the core, and resolving a local directory, leave huggingface_hub unimported."""
    (tmp_path / "config.json").write_text("{}")
    code = ("import sys, sgtui.cli, sgtui.models, sgtui.preflight, sgtui.viewmodel.launch_model; "
            f"assert sgtui.models.resolve_model({str(tmp_path)!r}).path == {str(tmp_path)!r}; "
            "print('huggingface_hub' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr
