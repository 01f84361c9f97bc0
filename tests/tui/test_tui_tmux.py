"""The replay driven as a person drives it, in a real terminal: `tmux_replay_check.sh` (two sessions side by
side: help, play, seek to step 2 of each run, verdict, quit; the pane read back as text). Runs wherever tmux
is installed (CI images and dev boxes have it; `apt-get install tmux`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "tmux_replay_check.sh"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (apt-get install tmux)")
def test_tmux_replay_check(tmp_path):
    # Stale COLUMNS/LINES, as an `export COLUMNS` shell or a test harness leaves them: they pinned the UI at
    # 80x24 through every resize until sgtui dropped them (shutil.get_terminal_size reads them first).
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path), "COLUMNS": "80", "LINES": "24"}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "tmux_replay_check: ok" in proc.stdout
    for run in ("vllm-sleep1#1", "sglang-release#1", "vllm-sleep1#2", "sglang-release#2"):
        assert f"step 2 of 1-3 · {run}" in (tmp_path / f"step2-{run}.txt").read_text()
