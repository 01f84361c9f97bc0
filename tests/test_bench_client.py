"""benchmarks/client_vs_vllm_bench.py: the closing `gap:` line names where a throughput difference sits.

Measured on an H100 (2026-12-06): sgtui 1.025x vllm bench's throughput (paired median) with the server's own
latency ratio 0.983 next to the client's 0.977; the first version of this line blamed sgtui's load pattern
for making the server slower, the opposite of what the numbers said.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import client_vs_vllm_bench as bench  # noqa: E402


def ratios(**kw: float) -> dict[str, float]:
    return {"tput": 1.0, "server_tput": 1.0, "span_tput": 1.0, "e2e_ms": 1.0, "server_e2e_ms": 1.0} | kw


def test_within_two_percent_is_no_gap():
    assert bench.diagnose(ratios(tput=1.015, server_tput=1.015)).startswith("no throughput gap")


def test_token_counts_that_disagree_are_the_definition():
    assert "DEFINITION" in bench.diagnose(ratios(tput=0.91, server_tput=1.0))


def test_requests_that_agree_outside_the_wall_clock_are_the_timing_window():
    assert "TIMING WINDOW" in bench.diagnose(ratios(tput=0.91, server_tput=0.91, span_tput=1.0))


def test_a_server_that_really_ran_faster_is_said_so_with_its_direction():
    line = bench.diagnose(ratios(tput=1.025, server_tput=1.025, span_tput=1.025, e2e_ms=0.977, server_e2e_ms=0.983))
    assert "LOAD ITSELF" in line and "generated more per second" in line
    slower = bench.diagnose(ratios(tput=0.91, server_tput=0.91, span_tput=0.91, e2e_ms=1.09, server_e2e_ms=1.1))
    assert "generated less per second" in slower


def test_a_server_whose_own_latency_did_not_move_points_at_the_client():
    line = bench.diagnose(ratios(tput=0.91, server_tput=0.91, span_tput=0.91, e2e_ms=1.09, server_e2e_ms=1.0))
    assert "CLIENT ITSELF" in line
