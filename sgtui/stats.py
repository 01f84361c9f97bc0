"""Small pure statistics: percentiles as numpy computes them, means, spreads, intervals.

No numpy at import: the core must start fast and stay light. Most of these run
on a few thousand values (per-step aggregates); the pooled ones (`exact_sum`,
`pooled_percentiles`, `pooled_stdev`) serve a run's millions of ITL values
from per-step sorted sets, so nothing is ever sorted twice, and give exactly
the numbers the plain functions give over all the values at once.
"""

from __future__ import annotations

import functools
import math
import statistics
import struct
from bisect import bisect_right
from dataclasses import dataclass
from itertools import chain, repeat
from operator import mul, sub
from typing import Callable, Iterable, Sequence


def mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else 0.0


def stdev(xs: Sequence[float]) -> float:
    """Population standard deviation (numpy's default ddof=0, as `vllm bench serve` reports std)."""
    return pooled_stdev((xs,), len(xs), mean(xs))


def pooled_stdev(sets: Iterable[Iterable[float]], n: int, m: float) -> float:
    """`stdev` of the union of `sets` (n values, mean m), term for term: sqrt(fsum(d * d) / n), d = x - m.

    The square is a product, as numpy's std squares (`vllm bench serve`'s std; libm's `pow(d, 2)` rounds
    differently for about one value in a thousand, and costs 10x a product in `sgtui.state.bulk`), summed
    in one C-level pass: fsum's sum is exact, so the order of the values does not matter.
    """
    if n < 2:
        return 0.0
    d = list(map(sub, chain.from_iterable(sets), repeat(m)))
    return math.sqrt(math.fsum(map(mul, d, d)) / n)


def exact_sum(xs: Sequence[float]) -> tuple[float, ...]:
    """The exact sum of xs as a few floats (usually 2 or 3): `math.fsum` over the parts of several sets
    is then exactly `math.fsum` over all their values (both are the correctly rounded exact sum), so a
    set's sum is kept once instead of its values being summed again in every pooled mean."""
    parts: list[float] = []
    r = math.fsum(xs)
    while r:  # each part is the rounded rest, so the rest shrinks by 2**-53 a round down to exactly 0
        parts.append(r)
        if not math.isfinite(r):  # inf/nan: the pooled fsum is inf/nan (or fails) as over the values
            break
        r = math.fsum(chain(xs, [-p for p in parts]))
    return tuple(parts)


def sample_stdev(xs: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1), for confidence intervals and Welch's test. The squares are products
    in one C-level pass, as `pooled_stdev`'s: the verdict tests every TPOT value of a run before and after
    its first sync (450k in a 1M-event session), and a generator of `** 2` was 0.13 s of the settled frame."""
    n = len(xs)
    if n < 2:
        return 0.0
    m = math.fsum(xs) / n
    d = list(map(sub, xs, repeat(m)))
    return math.sqrt(math.fsum(map(mul, d, d)) / (n - 1))


def percentile(xs: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """numpy.percentile(xs, q) with the default 'linear' method; 0.0 for no data (as vLLM bench does)."""
    if not xs:
        return 0.0
    s = xs if presorted else sorted(xs)
    return _interpolate(len(s), q, s.__getitem__)


def _interpolate(n: int, q: float, kth: Callable[[int], float]) -> float:
    """numpy's linear percentile of n > 0 values, `kth(i)` giving the i-th smallest (0-based)."""
    if n == 1:
        return float(kth(0))
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(kth(lo) + (kth(hi) - kth(lo)) * frac)


def percentiles(xs: Sequence[float], qs: Sequence[float]) -> list[float]:
    s = sorted(xs)
    return [percentile(s, q, presorted=True) for q in qs]


#: Pooled sets averaging at most this many values are merged by one sort (timsort merges sorted runs);
#: longer ones are searched (`kth_smallest`), whose cost grows with the number of sets, not of values.
MERGE_BELOW_MEAN_LEN = 256


def pooled_percentiles(sets: Sequence[Sequence[float]], qs: Sequence[float]) -> list[float]:
    """`percentiles` of the union of ascending `sets`, equal to them value for value, without the sort of
    the whole: a run's millions of ITL values are its steps' sets, each sorted once."""
    sets = [s for s in sets if len(s)]
    n = sum(map(len, sets))
    if not n:
        return [0.0 for _ in qs]
    if len(sets) == 1:
        kth = sets[0].__getitem__
    elif n <= MERGE_BELOW_MEAN_LEN * len(sets):
        kth = sorted(chain.from_iterable(sets)).__getitem__
    else:
        found: dict[int, float] = {}

        def kth(i: int) -> float:
            if i not in found:
                # percentiles interpolate between neighbours: the second is the first's successor
                found[i] = _successor(sets, i - 1, found[i - 1]) if i - 1 in found else kth_smallest(sets, i)
            return found[i]
    return [_interpolate(n, q, kth) for q in qs]


_DOUBLE = struct.Struct("<d")
_INT64 = struct.Struct("<q")
_MAGNITUDE = (1 << 63) - 1


def _order_key(x: float) -> int:
    """An int that orders like the float (every double between two keys lies between their floats)."""
    b = _INT64.unpack(_DOUBLE.pack(x))[0]
    return b if b >= 0 else -1 - (b & _MAGNITUDE)


def _from_order_key(k: int) -> float:
    return _DOUBLE.unpack(_INT64.pack(k if k >= 0 else (-1 - k) - (1 << 63)))[0]


def _successor(sets: Sequence[Sequence[float]], k: int, v: float) -> float:
    """The (k+1)-th smallest value of the union, v being the k-th: v again when it is tied, else the
    least value above it. One bisect per set instead of a new search."""
    if sum(map(bisect_right, sets, repeat(v))) > k + 1:
        return v
    return min(s[i] for s in sets if (i := bisect_right(s, v)) < len(s))


def kth_smallest(sets: Sequence[Sequence[float]], k: int) -> float:
    """The k-th smallest value (0-based) of the union of non-empty ascending sets, without merging them.

    A bisection over the doubles' order (at most 64 rounds) for the least value v with more than k
    values <= v, counting those with one bisect per set; that v is a value of the sets, the one a
    sort of the union would put at k.
    """
    lo = _order_key(min(s[0] for s in sets))
    hi = _order_key(max(s[-1] for s in sets))
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(map(bisect_right, sets, repeat(_from_order_key(mid)))) > k:
            hi = mid
        else:
            lo = mid + 1
    return _from_order_key(lo)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b), pure Python (the core carries no scipy)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with real (Welch: fractional) df > 0."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


#: Above this df the t quantile is the normal one to well within the 1e-3 reports show (t_.975(1e7) - z < 1e-6).
T_NORMAL_DF = 1e7


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t at real df, exactly (to ~1e-12): Welch's df is fractional, and a table
    looked up at floor(df) made 2-3 step intervals 1.2-2.8x too wide (df 1.9: 12.71 for 4.53; issue 13).
    Bisection on the tail probability, which falls monotonically in t."""
    if not 0.0 < p < 1.0 or not df > 0 or math.isnan(df):
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p!r}, df={df!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if df >= T_NORMAL_DF:
        return statistics.NormalDist().inv_cdf(p)
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > tail:  # bracket: the quantile lies in [hi/2, hi]
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if t_sf(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def t_critical_95(df: float) -> float:
    """Two-sided 95% critical value of Student's t at real df (exact, see `t_quantile`)."""
    return t_quantile(0.975, df)


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
