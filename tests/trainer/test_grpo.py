"""GRPO arithmetic and the runner's reading of torchrun failures (pure), plus the torch-side checks.

The torch-side checks (`inside/check_math.py`) run in the trainer venv, since
sgtui's own venv has no torch.
"""

import subprocess

import pytest

from sgtui.runner.trainer.grpo import group_advantages
from sgtui.runner.trainer.megatron_trainer import describe_exit, rank_failure
from tests.trainer.conftest import REPO, TRAINER_PY, needs_trainer, trainer_env


def test_advantages_are_normalised_within_each_group():
    adv = group_advantages([1.0, 0.0, 3.0, 5.0], [0, 0, 1, 1])
    assert adv[0] == pytest.approx(1.0, abs=1e-5) and adv[1] == pytest.approx(-1.0, abs=1e-5)
    assert adv[2] == pytest.approx(-1.0, abs=1e-5) and adv[3] == pytest.approx(1.0, abs=1e-5)


def test_group_without_reward_spread_gets_zero_advantage():
    assert group_advantages([0.7, 0.7, 0.1, 0.9], [3, 3, 4, 4])[:2] == [0.0, 0.0]


def test_advantages_of_a_group_sum_to_zero_whatever_the_order():
    rewards, groups = [0.2, 0.9, 0.4, 0.1, 0.3, 0.8], [1, 0, 1, 0, 1, 0]
    adv = group_advantages(rewards, groups)
    for g in (0, 1):
        assert abs(sum(a for a, gg in zip(adv, groups) if gg == g)) < 1e-9
    mean0 = (0.9 + 0.1 + 0.8) / 3
    std0 = (((0.9 - mean0) ** 2 + (0.1 - mean0) ** 2 + (0.8 - mean0) ** 2) / 3) ** 0.5
    assert adv[1] == pytest.approx((0.9 - mean0) / std0, rel=1e-5)


TORCHRUN_FAILURE = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
sgtui.runner.trainer FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-28_09:20:01
  host      : box
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 4242)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 4242
============================================================"""


def test_torchrun_root_cause_names_the_rank_and_signal():
    assert rank_failure(TORCHRUN_FAILURE.splitlines()) == (1, -9)
    assert rank_failure(["W1128 some warning", "nothing failed"]) is None
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)" and describe_exit(3) == "exit code 3"


@needs_trainer
def test_torch_side_checks_in_the_trainer_venv(tiny_gqa):
    # -o addopts=: the project's addopts ask for pytest-xdist, which the trainer venv does not have
    r = subprocess.run([TRAINER_PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-o", "addopts=",
                        "tests/trainer/inside/check_math.py"], cwd=REPO, env={**trainer_env(), "SGTUI_TEST_MODEL":
                                                                               str(tiny_gqa)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout
