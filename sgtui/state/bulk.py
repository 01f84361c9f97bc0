"""Large value sets reduced with numpy, to exactly the numbers the pure reductions give.

Why: a 1M-event session holds ~30M ITL values, and the pure reductions (`x * 1000.0`, the exact sum,
the spread with a square per value, the sort, percentiles searched across a run's steps) cost about
half a microsecond a value: most of the time from `sgtui replay big.jsonl` to settled numbers
(benchmarks/replay_load.py). Here the per-value arithmetic runs in C with the same IEEE operations:

- `*` and `-` are correctly rounded either way, so `a * 1000.0` and `a - m` are Python's values;
- the square of a deviation is a product, `d * d`, as numpy's std and the pure path compute it;
- sums are exact, as `math.fsum`'s: each set is cut into parts that add in float64 without rounding, in
  any order (`_exact_segments`: Rump, Ogita and Oishi's extraction), the parts are added as Python
  integers, and the one rounding at the end is Python's correctly rounded int division, as fsum's result
  is the correctly rounded exact sum;
- a stable sort gives Python's order; a selection (`np.partition`) gives the k-th smallest value.

So every number is bit for bit the pure path's (tests/test_state_bulk.py runs both). numpy, a declared
dependency, is imported on first use only (the core starts without it; where it is missing the pure path
serves); below BULK_MIN values the pure path is as fast, so small sessions and reports never load it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

from sgtui import stats

#: Sets smaller than this are reduced in pure Python (numpy's per-call overhead would dominate).
BULK_MIN = 1024
#: Values summed per pass, and about the size of the pieces a run's values are pooled in (`pooled`): bounds
#: the memory of a run's 15M ITL values.
CHUNK = 1 << 20

_np: Any = None
_tried = False


def numpy() -> Any:
    """The numpy module, imported on first use; None when it is not installed (the pure path then serves)."""
    global _np, _tried
    if not _tried:  # _np is set before _tried: a thread that sees _tried (summaries run in parallel) sees _np
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - a dependency; an install without it gets the pure path
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


#: Extraction rounds before the rest of a segment is summed in pure Python (values over more than ~200
#: binades: never latencies; see `_exact_segments`).
LEVELS = 6


#: Values per segment `_exact` cuts a large array into: 2**16 leave 36 bits a round to `_exact_segments`
#: (two rounds for latencies); one segment of a run's 15M ITL values would leave 28 (and a third round).
PIECE = 1 << 16


def _exact(a: Any, minus: float | None = None) -> tuple[int, int]:
    """(B, s) with sum(a) == B * 2**s exactly, for a finite float64 array; with `minus`, of the squares
    (x - minus) * (x - minus) instead. CHUNK values at a time: fresh temporaries of a run's 15M values
    (100 MB each) cost more in page faults than the arithmetic."""
    sums = []
    for i in range(0, len(a), CHUNK):
        x = a[i:i + CHUNK]
        if minus is not None:
            x = x - minus
            x *= x
        n = len(x)
        sums += _exact_segments(x, [PIECE] * (n // PIECE) + ([n % PIECE] if n % PIECE else []))
    return _combine(sums)


def _combine(sums: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """(B, s) with B * 2**s the exact sum of the exact sums (b, s) given."""
    sums = [(b, s) for b, s in sums if b]
    scale = min((s for _, s in sums), default=0)
    return sum(b << (s - scale) for b, s in sums), scale


def _exact_segments(a: Any, counts: Sequence[int]) -> list[tuple[int, int]]:
    """[(B, s)] with the sum of each segment of a (`counts[k]` values each, in order) == B * 2**s exactly,
    for a finite float64 array, in a few numpy passes over all segments at once.

    Rump, Ogita and Oishi's extraction ("Accurate floating-point summation", 2008): with sigma a power of
    two at least 2**M * max|x| of a segment and 2**M >= n + 2, q = (sigma + x) - sigma and x - q are exact,
    every q is a multiple of 2**-53 sigma, and any sum of n of them stays below sigma: numpy's
    `add.reduceat` adds them exactly in whatever order. The rests x - q are ~2**(52 - M) times smaller;
    latencies take two or three rounds. Each round is plain float arithmetic (numpy releases the GIL, so
    a replay's fold runs meanwhile); the exact binned sums used before cost 3x as much and held the GIL."""
    np = _np
    counts = [int(c) for c in counts]
    ends = np.cumsum(counts, dtype=np.int64)
    rest = np.array(a, dtype=np.float64)  # a copy: the rests replace the values round by round
    sums: list[tuple[int, float]] = []  # (segment, an exact part of its sum)
    live = [k for k, c in enumerate(counts) if c]
    pure: list[int] = []  # segments whose rest is summed in Python (too large to extract)
    for _ in range(LEVELS):
        if not live:
            break
        idx = None if len(live) == len(counts) else \
            np.concatenate([np.arange(ends[k] - counts[k], ends[k]) for k in live])
        x = rest if idx is None else rest[idx]
        ns = np.asarray([counts[k] for k in live], dtype=np.int64)
        rows = x.reshape(len(live), -1) if (ns == ns[0]).all() else None  # equal segments: a matrix
        firsts = np.concatenate(([0], np.cumsum(ns)[:-1]))
        top = np.abs(rows).max(axis=1) if rows is not None else np.maximum.reduceat(np.abs(x), firsts)
        sigma = np.ldexp(1.0, np.frexp(top)[1] + np.frexp((ns + 2).astype(np.float64))[1])
        finite = np.isfinite(sigma)
        if not finite.all():
            pure += [k for k, f in zip(live, finite.tolist()) if not f]
            sigma = np.where(finite, sigma, 0.0)  # no extraction: q = 0, the rest stays for the pure sum
        sig = sigma[:, None] if rows is not None else np.repeat(sigma, ns)
        q = (rows if rows is not None else x) + sig
        q -= sig
        sums.extend(zip(live, (q.sum(axis=1) if rows is not None else np.add.reduceat(q, firsts)).tolist()))
        if rows is not None:
            rows -= q
            left = np.abs(rows).max(axis=1)
        else:
            x -= q
            left = np.maximum.reduceat(np.abs(x), firsts)
        if idx is not None:
            rest[idx] = x
        live = [k for k, z, f in zip(live, (left == 0).tolist(), finite.tolist()) if not z and f]
    for k in live + pure:  # the rest of segments over hundreds of binades, exactly, in Python
        sums.extend((k, p) for p in stats.exact_sum(rest[ends[k] - counts[k]:ends[k]].tolist()))
    ratios = [(k, p.as_integer_ratio()) for k, p in sums if p]
    if not ratios:
        return [(0, 0)] * len(counts)
    den = max(d for _, (_, d) in ratios)  # powers of two: every part is an integer multiple of 1 / den
    totals = [0] * len(counts)
    for k, (num, d) in ratios:
        totals[k] += num * (den // d)
    return [(b, -(den.bit_length() - 1)) for b in totals]


def _round(b: int, s: int) -> float:
    """b * 2**s correctly rounded (half to even), as fsum rounds its exact sum."""
    return float(b << s) if s >= 0 else b / (1 << -s)


def exact_sum(a: Any) -> tuple[float, ...]:
    """`stats.exact_sum` of a finite float64 array: the rounded sum, then the rounded rest, ... to 0."""
    return _parts(*_exact(a))


def _parts(b: int, s: int) -> tuple[float, ...]:
    """`stats.exact_sum`'s floats of the exact sum b * 2**s."""
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


def stdev(a: Any, m: float) -> float:
    """`stats.pooled_stdev` of the values of array a, mean m: sqrt(fsum(d * d) / n), d = x - m."""
    n = len(a)
    if n < 2:
        return 0.0
    b, s = _exact(a, minus=m)
    return math.sqrt((_round(b, s) if b else 0.0) / n)


def dist_ms(seconds: Sequence[float], qs: Sequence[float]) -> tuple[Any, tuple[float, ...], float, list[float]] | None:
    """(ms values, their exact sum, population std, their percentiles qs) of seconds, as `metrics.dist_ms`
    gives them; the values in no particular order (partitioned for the percentiles); None for values numpy
    cannot sum exactly here (not finite: the pure path decides what they give)."""
    np = _np
    a = np.asarray(seconds, dtype=np.float64) * 1000.0  # an array("d") or float64 array: read without a copy
    if not np.isfinite(a).all():
        return None
    total = exact_sum(a)
    std = stdev(a, math.fsum(total) / len(a)) if len(a) else 0.0
    return a, total, std, _select(a, qs)  # unsorted: `metrics.Dist` sorts it only if its values are read


def dist_ms_segments(seconds: Any, counts: Sequence[int], qs: Sequence[float], spread: bool = True
                     ) -> list[tuple[Any, tuple[float, ...], float | None, list[float] | None] | None]:
    """`dist_ms` of each segment of `seconds` (`counts[k]` values each, in order), in a few passes over all
    of them: a run's steps reduced at once cost what one step's did (numpy's per-call cost, ~2 us, times
    a dozen calls, was most of a step's reduction). None for a segment that is empty or not all finite
    (the pure path decides what those give). Without `spread`, each std and percentiles are None: left to
    whoever reads them (`metrics.Dist`), as only a shown step's are."""
    np = _np
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    ns = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(ns) - ns
    ok = ns > 0
    finite = np.isfinite(a)
    clean = a
    if not finite.all():  # those segments go the pure way; zeros stand in for their values meanwhile
        ok &= np.bincount(np.repeat(np.arange(len(counts)), ns)[~finite], minlength=len(counts)) == 0
        clean = np.where(finite, a, 0.0)
    sums = _exact_segments(clean, counts)
    if spread:
        means = np.array([_round(*t) / c if c else 0.0 for t, c in zip(sums, counts)])
        d = clean - np.repeat(means, ns)
        squares = _exact_segments(d * d, counts)
        pcts = _segment_percentiles(a, starts.tolist(), counts, ok, qs)
    out: list[tuple[Any, tuple[float, ...], float | None, list[float] | None] | None] = []
    for k, c in enumerate(counts):
        if not ok[k]:
            out.append(None)
            continue
        lo = int(starts[k])
        std = (math.sqrt(_round(*squares[k]) / c) if c >= 2 else 0.0) if spread else None
        out.append((a[lo:lo + c], _parts(*sums[k]), std, pcts[k] if spread else None))
    return out


def _segment_percentiles(a: Any, starts: list[int], counts: Sequence[int], ok: Any, qs: Sequence[float]
                         ) -> dict[int, list[float]]:
    """`_select`'s percentiles of each ok segment: segments of one length are partitioned together, as the
    rows of one matrix, and interpolated at once (numpy's linear method, the same operations as
    `stats._interpolate`); a segment holding both -0.0 and 0.0 goes alone through `_select`."""
    by_len: dict[int, list[int]] = {}
    for k, c in enumerate(counts):
        if ok[k]:
            by_len.setdefault(c, []).append(k)
    out: dict[int, list[float]] = {}
    for n, same in by_len.items():
        for i in range(0, len(same), max(1, CHUNK // n)):  # a matrix of at most CHUNK values at a time
            out.update(_rows_percentiles(a, starts, same[i:i + max(1, CHUNK // n)], n, qs))
    return out


def _rows_percentiles(a: Any, starts: list[int], ks: list[int], n: int, qs: Sequence[float]
                      ) -> dict[int, list[float]]:
    """The percentiles of segments ks, all n values long, as the rows of one matrix."""
    np = _np
    out: dict[int, list[float]] = {}
    rows = np.asarray([starts[k] for k in ks], dtype=np.int64)
    m = a[rows[:, None] + np.arange(n)]  # a copy: partitioned in place
    signed_zero = np.signbit(m).any(axis=1) & (m == 0.0).any(axis=1)
    ranks = _ranks(n, qs)
    if n > 1:
        m.partition(ranks, axis=1)
    cols = []
    for q in qs:
        if n == 1:
            cols.append(m[:, 0])
            continue
        pos = (n - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        cols.append(m[:, lo] + (m[:, hi] - m[:, lo]) * (pos - lo))
    values = np.stack(cols, axis=1).tolist()
    for j, k in enumerate(ks):
        if signed_zero[j]:
            lo = starts[k]
            out[k] = _select(a[lo:lo + n].copy(), qs)
        else:
            out[k] = values[j]
    return out


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


#: Histogram bins (at most) `pooled` counts a run's values into, to find the few that hold its percentiles.
BINS = 1 << 16


def _keys(a: Any) -> Any:
    """int64 keys of float64 values, in the values' order (the bits of a float that is not negative already
    are; a negative one's are flipped below 0): what `pooled` counts and picks by."""
    np = _np
    b = a.view(np.int64)
    return b ^ ((b >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))


def _key(x: float) -> int:
    """`_keys` of one value."""
    return int(_keys(_np.array([x], dtype=_np.float64))[0])


def pooled(chunks: Callable[[], Iterable[Any]], n: int, mean: float, qs: Sequence[float]
           ) -> tuple[float, list[float]] | None:
    """(`stats.pooled_stdev`, `stats.pooled_percentiles`) of n float64 values that `chunks()` yields in
    pieces (afresh on each call; read only), mean given. None for values not all finite.

    Why pieces: the union of a run's ITL values (15M) as one array cost more to make than to reduce, since
    memory first touched is expensive (a fresh 100 MB took ~0.4 s of the replay CPU, benchmarks/replay_load.py),
    and a selection of all of them reordered it. Three passes over pieces a few MB each instead: squares
    (exact sums add across pieces) and the keys' range; a histogram of the keys (BINS bins); the values
    of the bins that hold the wanted ranks, from which a selection finds them: the same order statistics."""
    np = _np
    if not n:
        return 0.0, [0.0 for _ in qs]
    squares: list[tuple[int, int]] = []
    lo: int | None = None
    hi: int | None = None
    for a in chunks():
        if not len(a):
            continue
        least, most = a.min(), a.max()  # NaN and infinities show in one or the other (NaN propagates)
        if not (np.isfinite(least) and np.isfinite(most)):
            return None
        squares.append(_exact(a, minus=mean))
        # the keys' range from the values' (keys keep the order; a zero of either sign may be either end)
        k_lo = _key(-0.0 if least == 0.0 else float(least))
        k_hi = _key(0.0 if most == 0.0 else float(most))
        lo = k_lo if lo is None else min(lo, k_lo)
        hi = k_hi if hi is None else max(hi, k_hi)
    total, scale = _combine(squares)
    std = math.sqrt((_round(total, scale) if total else 0.0) / n) if n >= 2 else 0.0
    assert lo is not None and hi is not None, "n values came in no chunk"
    shift = max(0, (hi - lo).bit_length() - BINS.bit_length() + 1)
    base = lo >> shift
    counts = np.zeros((hi >> shift) - base + 1, dtype=np.int64)
    for a in chunks():
        if len(a):
            counts += np.bincount((_keys(a) >> shift) - base, minlength=len(counts))
    ranks = _ranks(n, qs)
    ends = np.cumsum(counts)
    bins = np.searchsorted(ends, ranks, side="right").tolist()  # the bin of each rank
    picked = np.zeros(len(counts), dtype=bool)
    picked[bins] = True
    values = np.concatenate([a[picked[(_keys(a) >> shift) - base]] for a in chunks() if len(a)])
    # every value of the picked bins: a rank among them skips the values of the bins not picked below its own
    skipped = ends - np.cumsum(np.where(picked, counts, 0))
    at = {r: r - int(skipped[b]) for r, b in zip(ranks, bins)}
    values.partition(sorted(set(at.values())))
    sel = _Selected(n, {r: float(values[i]) for r, i in at.items()})
    return std, [stats.percentile(sel, q, presorted=True) for q in qs]
