"""Goodput as `vllm bench serve --goodput` defines it: SLOs in ms, a request is good when it meets every one.

Contract (pure functions, no IO):
    parse_goodput(values) -> ((metric, ms), ...)   `--goodput` values; GoodputError (one line) when bad
    join_goodput_argv(argv) -> argv                 lets `--goodput ttft:500 tpot:50` take several words, as vLLM's
    slo_text(slos) -> "ttft<=500ms, tpot<=50ms"     how every report names the SLOs
    is_good(request, slos) -> bool
    goodput(requests, duration_s, slos) -> Goodput  good requests / duration (`request_goodput`, req/s)
    step_goodput(step, slos) / run_goodput(run, slos) / by_label(((label, run), ...), slos)

Definitions are vLLM 0.32.0's (vllm/benchmarks/serve.py, `calculate_metrics` and `check_goodput_args`), so a
goodput here and one vLLM prints for the same requests are the same number:
- only successful requests can be good; failed ones count in neither `good` nor `completed`;
- the comparison is vLLM's float expression, `slo_ms / 1000 >= value_s`, metric by metric (ttft, tpot, e2el);
- TPOT is (latency - ttft) / (output_tokens - 1), and 0 for a one-token answer: such a request meets any TPOT
  SLO although it is left out of the TPOT distribution (vLLM's `all_tpots` versus `tpots`);
- the duration is the rollout wall time, the same one the throughputs divide by (`state.rollout_duration`;
  a run sums its steps' rollouts, as `RunSummary.metrics` and `--format vllm-json` do).
The SLOs travel as `ReportOptions.goodput` (sgtui/options.py): one value object, so text, Markdown, JSON, CSV
and vllm-json show the same count. Values must be > 0 ms (vLLM accepts 0, which only a one-token answer's TPOT
meets: a typo, not an SLO); a metric given twice is an error rather than vLLM's silent last-wins.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:  # the CLI parses --goodput before anything imports the state fold
    from sgtui.events import Request
    from sgtui.state import RunState, StepState

GOODPUT_METRICS = ("ttft", "tpot", "e2el")
MS_PER_S = 1000  # vLLM's MILLISECONDS_TO_SECONDS_CONVERSION (an int: the division below is vLLM's float)
EXPECTED = ("expected KEY:MS pairs, KEY one of ttft, tpot, e2el and MS milliseconds > 0, "
            "e.g. --goodput ttft:500 tpot:50 e2el:20000")

Slos = tuple[tuple[str, float], ...]


class GoodputError(ValueError):
    """A bad `--goodput` value; the message is one line naming the flag and what was expected."""


def parse_goodput(values: Iterable[str]) -> Slos:
    """`--goodput` values (each may hold several pairs split by spaces or commas) -> ((metric, ms), ...)."""
    out: dict[str, float] = {}
    for value in values:
        for pair in re.split(r"[\s,]+", value.strip()):
            if not pair:
                continue
            key, sep, num = pair.partition(":")
            key = key.strip().lower()
            try:
                ms = float(num) if sep else math.nan
            except ValueError:
                ms = math.nan
            if key not in GOODPUT_METRICS or not math.isfinite(ms) or ms <= 0:
                raise GoodputError(f"--goodput {pair!r}: {EXPECTED}")
            if key in out:
                raise GoodputError(f"--goodput {pair!r}: {key} given twice; {EXPECTED}")
            out[key] = ms
    return tuple(out.items())


_PAIR_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*:[^/\\]*$")  # KEY:VALUE, never a path (sessions/a.jsonl)


def join_goodput_argv(argv: Sequence[str]) -> list[str]:
    """Join the words after `--goodput` that look like KEY:VALUE into its one value, so vLLM's spelling
    `--goodput ttft:500 tpot:50` works with a parser that takes one value per option. Stops at `--`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            out.extend(argv[i:])
            break
        if word == "--goodput" and i + 1 < len(argv):
            parts, i = [argv[i + 1]], i + 2
        elif word.startswith("--goodput="):
            parts, i = [word.split("=", 1)[1]], i + 1
        else:
            out.append(word)
            i += 1
            continue
        while i < len(argv) and _PAIR_WORD.match(argv[i]):
            parts.append(argv[i])
            i += 1
        out += ["--goodput", " ".join(parts)]
    return out


def slo_text(slos: Slos) -> str:
    return ", ".join(f"{k}<={ms:g}ms" for k, ms in slos)


def tpot_for_goodput(r: Request) -> float:
    return (r.latency - r.ttft) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0


def is_good(r: Request, slos: Slos) -> bool:
    """A successful request that meets every SLO (vLLM: all(slo_s >= value_s))."""
    if r.error:
        return False
    values = {"ttft": r.ttft, "tpot": tpot_for_goodput(r), "e2el": r.latency}
    return all(ms / MS_PER_S >= values[k] for k, ms in slos)


@dataclass(frozen=True)
class Goodput:
    slos: Slos
    good: int  # successful requests that met every SLO
    completed: int  # successful requests
    duration_s: float

    @property
    def request_goodput(self) -> float:
        """Good requests per second of rollout (vLLM's `request_goodput`); 0 without a duration."""
        return self.good / self.duration_s if self.duration_s > 0 else 0.0


def goodput(requests: Iterable[Request], duration_s: float, slos: Slos) -> Goodput:
    good = completed = 0
    for r in requests:
        if not r.error:
            completed += 1
            good += is_good(r, slos)
    return Goodput(slos, good, completed, duration_s)


def step_goodput(step: StepState, slos: Slos) -> Goodput:
    from sgtui.state import rollout_duration

    return goodput(step.requests, rollout_duration(step), slos)


def run_goodput(run: RunState, slos: Slos) -> Goodput:
    """Every rollout request of the run's RL steps over the sum of their rollout times."""
    from sgtui.state import rollout_duration

    steps = [run.steps[n] for n in run.rl_steps]
    return goodput((r for s in steps for r in s.requests), sum(rollout_duration(s) for s in steps), slos)


def by_label(runs: Iterable[tuple[str, RunState]], slos: Slos) -> dict[str, Goodput]:
    """`run_goodput` of each (label, run) of a report: what every export shows; {} without SLOs."""
    return {label: run_goodput(run, slos) for label, run in runs} if slos else {}
