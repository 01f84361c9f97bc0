"""Small pure statistics: percentiles as numpy computes them, means, spreads, intervals.

No numpy at import: the core must start fast and stay light; these run on
lists of a few thousand values at most (per-step aggregates, request samples).
"""

from __future__ import annotations

import math
from typing import Sequence


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else 0.0


def stdev(xs: Sequence[float]) -> float:
    """Population standard deviation (numpy's default ddof=0, as `vllm bench serve` reports std)."""
    n = len(xs)
    if n < 2:
        return 0.0
    m = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / n)


def sample_stdev(xs: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1), for confidence intervals."""
    n = len(xs)
    if n < 2:
        return 0.0
    m = math.fsum(xs) / n
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))


def percentile(xs: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """numpy.percentile(xs, q) with the default 'linear' method; 0.0 for no data (as vLLM bench does)."""
    if not xs:
        return 0.0
    s = xs if presorted else sorted(xs)
    n = len(s)
    if n == 1:
        return float(s[0])
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(s[lo] + (s[hi] - s[lo]) * frac)


def percentiles(xs: Sequence[float], qs: Sequence[float]) -> list[float]:
    s = sorted(xs)
    return [percentile(s, q, presorted=True) for q in qs]
