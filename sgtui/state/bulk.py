"""Large value sets reduced with numpy, to exactly the numbers the pure reductions give.

Why: a 1M-event session holds ~30M ITL values, and the pure reductions (`x * 1000.0`, the exact sum,
the spread with `** 2` per value, the sort, percentiles searched across a run's steps) cost about
half a microsecond a value: most of the time from `sgtui replay big.jsonl` to settled numbers
(benchmarks/replay_load.py). Here the per-value arithmetic runs in C with the same IEEE operations:

- `*` and `-` are correctly rounded either way, so `a * 1000.0` and `a - m` are Python's values;
- the square is `np.float_power(x, 2.0)`, which calls the C library's `pow` as Python's `x ** 2` does
  (numpy's `power`, `square` and `a ** 2` use `x * x` or SIMD code, which differ from `pow` for about
  one value in a thousand);
- sums are exact, as `math.fsum`'s: each value is an integer mantissa times a power of two, the
  mantissas are added per exponent in float64 halves small enough that no addition rounds
  (`np.bincount`), and the per-exponent totals in Python integers; the one rounding at the end is
  Python's correctly rounded int division, as fsum's result is the correctly rounded exact sum;
- a stable sort gives Python's order; a selection (`np.partition`) gives the k-th smallest value.

So every number is bit for bit the pure path's (tests/test_state_bulk.py runs both). numpy is imported
on first use only (the core starts without it) and only if installed (it comes with matplotlib); below
BULK_MIN values the pure path is as fast, so small sessions and reports never load it.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Sequence

from sgtui import stats

#: Sets smaller than this are reduced in pure Python (numpy's per-call overhead would dominate).
BULK_MIN = 1024
#: Values summed per pass (bounds the memory of a run's 15M ITL values; see HALF).
CHUNK = 1 << 20

_np: Any = None
_tried = False


def numpy() -> Any:
    """The numpy module, imported on first use; None when it is not installed (the pure path then serves)."""
    global _np, _tried
    if not _tried:  # _np is set before _tried: a thread that sees _tried (summaries run in parallel) sees _np
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy comes with matplotlib, a dependency
            np = None
        _np = np
        _tried = True
    return _np


def enabled(n: int) -> bool:
    """Reduce n values here? (Enough of them, and numpy installed.)"""
    return n >= BULK_MIN and numpy() is not None


def is_array(x: Any) -> bool:
    """Is x a numpy array? (False, without importing numpy, before numpy was first used.)"""
    return _np is not None and isinstance(x, _np.ndarray)


#: Mantissas (53 bits) are added as a high and a low half of HALF bits: float64 adds integers below
#: 2**53 exactly, so up to 2**(53 - 27) values per exponent add without rounding; CHUNK stays below that.
HALF = 26


def _exact(a: Any) -> tuple[int, int]:
    """(B, s) with sum(a) == B * 2**s exactly, for a finite float64 array."""
    np = _np
    total, scale = 0, 0
    for i in range(0, len(a), CHUNK):
        m, e = np.frexp(a[i:i + CHUNK])
        mant = np.ldexp(m, 53).astype(np.int64)  # x == mant * 2**(e - 53), exactly
        lo_e = int(e.min())
        idx = e - lo_e
        hi = np.bincount(idx, weights=mant >> HALF)
        lo = np.bincount(idx, weights=mant & ((1 << HALF) - 1))
        b = 0
        for k in np.flatnonzero((hi != 0) | (lo != 0)).tolist():
            b += ((int(hi[k]) << HALF) + int(lo[k])) << k
        s = lo_e - 53
        if not total:
            total, scale = b, s
        elif s >= scale:
            total += b << (s - scale)
        else:
            total, scale = (total << (scale - s)) + b, s
    return total, scale


def _round(b: int, s: int) -> float:
    """b * 2**s correctly rounded (half to even), as fsum rounds its exact sum."""
    return float(b << s) if s >= 0 else b / (1 << -s)


def exact_sum(a: Any) -> tuple[float, ...]:
    """`stats.exact_sum` of a finite float64 array: the rounded sum, then the rounded rest, ... to 0."""
    b, s = _exact(a)
    parts = []
    while b:
        p = _round(b, s)
        parts.append(p)
        num, den = p.as_integer_ratio()  # p is a multiple of 2**s: it rounds b * 2**s above that bit
        b -= (num << -s) // den if s < 0 else num // (den << s)
    return tuple(parts)


def fsum(a: Any) -> float:
    """math.fsum of a finite float64 array."""
    b, s = _exact(a)
    return _round(b, s) if b else 0.0


def _stdev(a: Any, m: float) -> float:
    """`stats.pooled_stdev` of the values of array a, mean m: sqrt(fsum(pow(x - m, 2)) / n)."""
    n = len(a)
    if n < 2:
        return 0.0
    np = _np
    return math.sqrt(fsum(np.float_power(a - m, 2.0)) / n)


def dist_ms(seconds: Sequence[float], qs: Sequence[float]) -> tuple[Any, tuple[float, ...], float, list[float]] | None:
    """(ms values, their exact sum, population std, their percentiles qs) of seconds, as `metrics.dist_ms`
    gives them; the values in no particular order (partitioned for the percentiles); None for values numpy
    cannot sum exactly here (not finite: the pure path decides what they give)."""
    np = _np
    a = np.asarray(seconds, dtype=np.float64) * 1000.0  # an array("d") or float64 array: read without a copy
    if not np.isfinite(a).all():
        return None
    total = exact_sum(a)
    std = _stdev(a, math.fsum(total) / len(a)) if len(a) else 0.0
    return a, total, std, _select(a, qs)  # unsorted: `metrics.Dist` sorts it only if its values are read


def sort(a: Any) -> Any:
    """A sorted copy of a finite float64 array, in the order Python's (stable) sort gives."""
    return _np.sort(a, kind="stable")  # equal values keep their order, as in Python's sort (0.0 and -0.0)


def select(a: Any, qs: Sequence[float]) -> list[float] | None:
    """`stats.pooled_percentiles([sorted(a)], qs)` of one finite set by selection (a copy is partitioned);
    None for values not all finite (the pure path decides what they give)."""
    np = _np
    a = np.array(a, dtype=np.float64)
    if not np.isfinite(a).all():
        return None
    return _select(a, qs)


def _select(a: Any, qs: Sequence[float]) -> list[float]:
    """The percentiles qs of finite float64 array a, which is reordered in place: partitioned, or sorted
    stably where -0.0 and 0.0 both occur (then which of them a rank holds depends on the order, and a stable
    sort of the values as they came gives Python's; a stable sort of `a` afterwards gives the same again)."""
    np = _np
    n = len(a)
    if not n:
        return [0.0 for _ in qs]
    if np.signbit(a).any() and (a == 0.0).any():  # -0.0 and 0.0: which one a rank holds depends on the order
        a.sort(kind="stable")
        return [stats.percentile(a.tolist(), q, presorted=True) for q in qs]
    ranks = _ranks(n, qs)
    a.partition(ranks)
    sel = _Selected(n, {k: float(a[k]) for k in ranks})
    return [stats.percentile(sel, q, presorted=True) for q in qs]


class _Selected:
    """The few order statistics `stats.percentile` reads of n values, found by selection: a stand-in for
    the sorted union that answers only those ranks."""

    def __init__(self, n: int, found: dict[int, float]) -> None:
        self.n, self.found = n, found

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        return self.found[i]


def _ranks(n: int, qs: Sequence[float]) -> list[int]:
    """The ranks `stats.percentile` reads for each q of n values (numpy's linear method)."""
    out = set()
    for q in qs:
        pos = (n - 1) * q / 100.0
        lo = math.floor(pos)
        out.update((lo, min(lo + 1, n - 1)))
    return sorted(out)


def pooled(sets: Sequence[array], mean: float, qs: Sequence[float]) -> tuple[float, list[float]] | None:
    """(`stats.pooled_stdev`, `stats.pooled_percentiles`) of the union of ascending sets (mean given):
    one concatenation, one pass of squares, one selection. None for values not all finite."""
    np = _np
    parts = [np.frombuffer(s, dtype=np.float64) for s in sets if len(s)]
    a = np.concatenate(parts) if parts else np.empty(0)
    n = len(a)
    if not n:
        return 0.0, [0.0 for _ in qs]
    if not np.isfinite(a).all():
        return None
    std = _stdev(a, mean)
    ranks = _ranks(n, qs)
    a.partition(ranks)
    sel = _Selected(n, {k: float(a[k]) for k in ranks})
    return std, [stats.percentile(sel, q, presorted=True) for q in qs]
