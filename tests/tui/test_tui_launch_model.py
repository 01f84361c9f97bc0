"""The launch form's model: CLI runs -> form -> the same RunConfigs; last-session prefill; one-line errors."""

from __future__ import annotations

import pytest

from sgtui.config import ConfigError, RunConfig
from sgtui.session import SessionWriter, make_header
from sgtui.viewmodel.launch_model import LaunchOptions, last_session_runs


def cli_runs() -> list[RunConfig]:
    common = dict(model="/m", num_steps=5, num_rollouts=12, concurrency=6, max_input_tokens=100,
                  max_output_tokens=50, tp=1, gpu_memory_utilization=0.6, seed=3, device="cpu",
                  initial_adapter="/m/adapters/initial")
    return [RunConfig(label="vllm-sleep2", backend="vllm", strategy="sleep2", python="/v/python", port=8101, **common),
            RunConfig(label="sglang-release", backend="sglang", strategy="release", python="/s/python", port=8201,
                      **common),
            RunConfig(label="vllm-restart", backend="vllm", strategy="restart", sync="restart", python="/v/python",
                      port=8101, **common)]


def test_round_trip_gives_the_cli_runs_back():
    runs = cli_runs()
    opts = LaunchOptions.from_runs(runs, "sessions", ["txt"])
    assert opts.backends["vllm"].strategy == "sleep2" and opts.backends["sglang"].port == 8201
    assert opts.extra_runs == "vllm:restart+restart"
    back = opts.to_runs()
    assert [r.to_dict() for r in back] == [r.to_dict() for r in runs]


def test_bad_values_name_the_field():
    opts = LaunchOptions.from_runs(cli_runs())
    opts.gpus = "0,x"
    with pytest.raises(ConfigError, match="engine GPUs"):
        opts.to_runs()
    opts = LaunchOptions.from_runs(cli_runs())
    opts.extra_runs = "vllm:nap"
    with pytest.raises(ConfigError, match="strategy 'nap'"):
        opts.to_runs()
    opts = LaunchOptions.from_runs(cli_runs())
    opts.num_steps = 0
    with pytest.raises(ConfigError, match="--num-steps"):
        opts.to_runs()
    opts = LaunchOptions.from_runs(cli_runs())
    for row in opts.backends.values():
        row.enabled = False
    opts.extra_runs = ""
    with pytest.raises(ConfigError, match="backends"):
        opts.to_runs()


def test_last_session_fills_what_the_command_line_did_not_say(tmp_path):
    last = cli_runs()[:2]
    for r in last:
        r.num_steps, r.concurrency = 9, 3
    with SessionWriter(tmp_path / "20260101T000000Z-old.jsonl") as w:
        w.write(make_header(["sgtui"], {"runs": [r.to_dict() for r in last]}))
    found, path = last_session_runs(tmp_path)
    assert path is not None and [r.label for r in found] == ["vllm-sleep2", "sglang-release"]
    fresh = [RunConfig(label="vllm-sleep1", backend="vllm", strategy="sleep1", python="/v/python", model="/m",
                       num_steps=2, concurrency=8)]
    opts = LaunchOptions.from_runs(fresh)
    opts.merge_last(found, explicit={"concurrency"})
    assert opts.num_steps == 9  # not given: the last session's
    assert opts.concurrency == 8  # given on the command line: kept
    assert opts.backends["vllm"].strategy == "sleep2" and opts.backends["sglang"].enabled
    opts2 = LaunchOptions.from_runs(fresh)
    opts2.merge_last(found, explicit={"backends"})
    assert opts2.backends["vllm"].strategy == "sleep1" and not opts2.backends["sglang"].enabled


def test_no_sessions_dir_means_no_prefill(tmp_path):
    assert last_session_runs(tmp_path / "missing") == ([], None)
