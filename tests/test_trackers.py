"""--log-to: a session's per-step numbers in TensorBoard (read back with its own event reader) and W&B
(offline mode, read back from the run file it wrote), equal to the numbers every report prints."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sgtui import trackers
from sgtui.export import load_sessions

SESSION = Path(__file__).resolve().parents[1] / "sessions" / \
    "20261203T221836Z-vllm-sleep1_vs_sglang-release-training-h200-1b.jsonl"


@pytest.fixture(scope="module")
def state():
    return load_sessions([SESSION])


def test_rows_are_the_reports_numbers(state):
    (st,) = state
    s = st.summary("vllm-sleep1")
    rows = dict(trackers.step_rows(s))
    assert sorted(rows) == [st_.step for st_ in s.steps] == [1, 2, 3, 4]
    for step in s.steps:
        row = rows[step.step]
        assert row["phase/rollout_s"] == step.phases["rollout"]
        assert row["rollout/output_throughput"] == step.metrics.output_throughput
        assert row["mismatch/mean_abs"] == step.mismatch["mean_abs"] and row["mismatch/k3"] == step.mismatch["k3"]
        assert row["train/update_s"] == step.train_parts["update"]
    held = {m.step: m.held_mib for m in s.memory.steps}
    assert all(rows[n].get("memory/held_mib") == held[n] for n in held if held[n] is not None)


def test_tensorboard_scalars_read_back(state, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator  # the dev extra installs both trackers

    lines = trackers.log_session(state, "tensorboard", tmp_path)
    assert len(lines) == 2 and all(line.startswith("tensorboard: ") for line in lines)
    s = state[0].summary("sglang-release")
    logdir = tmp_path / SESSION.stem / "sglang-release"
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    scalars = acc.Scalars("phase/rollout_s")
    assert [e.step for e in scalars] == [1, 2, 3, 4]
    assert [e.value for e in scalars] == pytest.approx([st.phases["rollout"] for st in s.steps], rel=1e-6)
    assert "mismatch/k3" in acc.Tags()["scalars"] and "memory/held_mib" in acc.Tags()["scalars"]


def _wandb_records(path: Path):
    """The records of a .wandb file (a LevelDB-style log: 32 KiB blocks of CRC, length, type, data chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    b = path.read_bytes()
    assert b[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(b):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", b[pos:pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        data, pos = b[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (2, 3):  # first, middle
            buf = (b"" if kind == 2 else buf) + data
            continue
        r = pb.Record()
        r.ParseFromString(buf + data if kind == 4 else data)
        buf = b""
        yield r


def test_wandb_offline_run_holds_every_step(state, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    lines = trackers.log_session(state, "wandb", tmp_path)
    assert len(lines) == 2
    s = state[0].summary("vllm-sleep1")
    run_dir = Path(lines[0].split(" -> ")[1])
    (file,) = run_dir.glob("run-*.wandb")
    history, names, config = [], [], {}
    for r in _wandb_records(file):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "run":
            names.append(r.run.display_name)
            config = {i.key: json.loads(i.value_json) for i in r.run.config.update}
    assert names == [f"{SESSION.stem}/vllm-sleep1"]
    assert config["backend"] == "vllm" and config["strategy"] == "sleep1"
    assert [h["_step"] for h in history] == [1, 2, 3, 4]
    assert [h["phase/train_s"] for h in history] == pytest.approx([st.phases["train"] for st in s.steps])


def test_an_unknown_target_or_missing_extra_is_one_line(state, tmp_path, monkeypatch):
    with pytest.raises(trackers.TrackerError, match=r"^--log-to: expected one of wandb, tensorboard, got 'mlflow'$"):
        trackers.log_session(state, "mlflow", tmp_path)
    import builtins

    real = builtins.__import__

    def no_tensorboardx(name, *a, **kw):
        if name == "tensorboardX":
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    with pytest.raises(trackers.TrackerError, match=r"tensorboardX is not installed \(pip install 'sgtui\[tensorboard\]'\)"):
        trackers.log_session(state, "tensorboard", tmp_path)


def test_report_log_to_tensorboard_from_the_cli(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "sgtui", "report", str(SESSION), "--log-to", "tensorboard",
                        "--log-dir", str(tmp_path), "-o", str(tmp_path / "r.txt")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("sgtui: tensorboard: ") == 2 and (tmp_path / "r.txt").read_text().count("VERDICT") == 1
    assert list((tmp_path / SESSION.stem / "vllm-sleep1").glob("events.out.tfevents.*"))
    bad = subprocess.run([sys.executable, "-m", "sgtui", "report", str(SESSION), "--log-to", "mlflow"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--log-to" in bad.stderr


def test_a_headless_run_logs_its_steps_at_the_end(tmp_path):
    """`sgtui --no-ui --log-to tensorboard`: the reports written at the end include the tracker runs (the same
    write_exports the UI and the detached orchestrator use), one per run, with every step the session holds."""
    import os
    import subprocess
    import sys

    from tensorboard.backend.event_processing import event_accumulator

    root = Path(__file__).resolve().parents[1]
    standin = root / "tests" / "fixtures" / "standin_python.sh"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "sessions"
    env = {**os.environ, "PYTHONPATH": str(root), "SGTUI_TEST_PYTHON": sys.executable, "SGTUI_FAKE_MODE": "steps"}
    r = subprocess.run([sys.executable, "-m", "sgtui", "--no-ui", "--run", f"vllm@{standin}", "--model", str(model),
                        "--skip-preflight", "-o", str(out), "--export", "txt", "--log-to", "tensorboard",
                        "--log-dir", str(tmp_path / "tb")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    (session,) = out.glob("*.jsonl")
    (st,) = load_sessions([session])
    steps = [s.step for s in st.summary("vllm-sleep1").steps]
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb" / session.stem / "vllm-sleep1"))
    acc.Reload()
    assert steps == [1, 2] and [e.step for e in acc.Scalars("phase/rollout_s")] == steps
    assert f"wrote {tmp_path / 'tb' / session.stem / 'vllm-sleep1'}" in " ".join(r.stderr.split())
