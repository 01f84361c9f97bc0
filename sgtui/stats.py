"""Small pure statistics: percentiles as numpy computes them, means, spreads, intervals.

No numpy at import: the core must start fast and stay light; these run on
lists of a few thousand values at most (per-step aggregates, request samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


# Two-sided 95% Student t critical values by degrees of freedom (df > 30: normal approximation).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 22: 2.074, 24: 2.064, 26: 2.056, 28: 2.048, 30: 2.042}


def t_critical_95(df: float) -> float:
    if df >= 30:
        return 1.96 + 2.4 / df  # within 0.01 of the exact value for df >= 30
    d = max(1, int(math.floor(df)))
    while d not in _T95:
        d -= 1
    return _T95[d]


@dataclass(frozen=True)
class Comparison:
    """b relative to a: diff = mean(b) - mean(a), with a 95% Welch t-interval of that difference."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    noise_known: bool  # False with fewer than 2 samples on a side: no spread to compare against

    @property
    def significant(self) -> bool:
        return self.noise_known and (self.ci_low > 0 or self.ci_high < 0)

    def pct(self, x: float) -> float:
        return 100.0 * x / self.mean_a if self.mean_a else 0.0


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Difference of means with a Welch t-interval (unequal variances, small samples: per-step values)."""
    ma, mb = mean(a), mean(b)
    diff = mb - ma
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return Comparison(ma, mb, diff, diff, diff, na, nb, False)
    va, vb = sample_stdev(a) ** 2 / na, sample_stdev(b) ** 2 / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison(ma, mb, diff, diff, diff, na, nb, True)
    df = (va + vb) ** 2 / ((va**2 / (na - 1) if na > 1 else 0) + (vb**2 / (nb - 1) if nb > 1 else 0))
    h = t_critical_95(df) * se
    return Comparison(ma, mb, diff, diff - h, diff + h, na, nb, True)
