"""Request metrics, following `vllm bench serve` exactly (benchmarks/serve.py, `calculate_metrics`).

Failed requests count only as errors; TTFT, TPOT and E2E are per successful request; ITL is pooled over
every chunk gap of every successful request; TPOT = (latency - ttft) / (output_tokens - 1) for requests
with more than one output token; throughput divides by the rollout wall time (the `rollout` phase), and
percentiles are numpy's linear ones.

A set of requests is reduced once (`request_stats`: counts, exact sums, sorted distributions); sets pool
(`pooled_metrics`) to exactly what `calculate_metrics` gives for all their requests at once, so a run's
metrics pool its steps' reductions instead of pooling and sorting every ITL value of the run again.
Pure functions of request records: nothing here knows about runs or steps.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass
from itertools import chain, filterfalse, repeat
from operator import attrgetter, mul
from typing import Any, Iterable, Iterator, Sequence

from sgtui import stats
from sgtui.events import Request
from sgtui.state import bulk

PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class RequestMetrics:
    """Flat metrics over a set of requests, named like `vllm bench serve`'s result JSON."""

    completed: int = 0
    errors: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    duration_s: float = 0.0
    request_throughput: float = 0.0
    output_throughput: float = 0.0
    total_token_throughput: float = 0.0
    mean_ttft_ms: float = 0.0
    median_ttft_ms: float = 0.0
    std_ttft_ms: float = 0.0
    p50_ttft_ms: float = 0.0
    p90_ttft_ms: float = 0.0
    p99_ttft_ms: float = 0.0
    mean_tpot_ms: float = 0.0
    median_tpot_ms: float = 0.0
    std_tpot_ms: float = 0.0
    p50_tpot_ms: float = 0.0
    p90_tpot_ms: float = 0.0
    p99_tpot_ms: float = 0.0
    mean_itl_ms: float = 0.0
    median_itl_ms: float = 0.0
    std_itl_ms: float = 0.0
    p50_itl_ms: float = 0.0
    p90_itl_ms: float = 0.0
    p99_itl_ms: float = 0.0
    mean_e2el_ms: float = 0.0
    median_e2el_ms: float = 0.0
    std_e2el_ms: float = 0.0
    p50_e2el_ms: float = 0.0
    p90_e2el_ms: float = 0.0
    p99_e2el_ms: float = 0.0


class Dist:
    """One metric's values over a set of requests, in ms, reduced once: what its mean, std and
    percentiles need, alone or pooled with other sets (a run pools its steps').

    A large set (reduced by `sgtui.state.bulk`) keeps its values as they came (`raw`, a numpy array) and is
    sorted only if something reads `values`: its percentiles, alone or pooled, come from a selection
    (`bulk.select`, `bulk.pooled`), which needs no order, so a replay never sorts a step's ITL values.
    A step's ITL values are not kept at all (`requests`): they are the requests' own gaps times 1000, made
    again when read (a shown step; a run's pooled percentiles, `ms_chunks`). Kept, they were a second copy
    of every ITL value (~220 MB for a 1M-event session), and memory first touched costs more than the
    multiplication (benchmarks/replay_load.py)."""

    __slots__ = ("_raw", "requests", "n", "total", "_std", "percentiles", "_asc")

    def __init__(self, values: Any, total: tuple[float, ...], std: float | None,
                 percentiles: list[float] | None = None, requests: Sequence[Request] | None = None,
                 n: int | None = None) -> None:
        self._raw = values  # any order (an `array("d")` from the pure path is already ascending); None: `requests`
        self.requests = requests  # whose ITL gaps the values are, when they are not kept
        self.n: int = len(values) if values is not None else n or 0  # values not kept: their count given
        self.total = total  # exact sum of the values (`stats.exact_sum`)
        self._std = std  # population std of this set alone; None: computed when first read
        #: the set's own PERCENTILES, where the reduction found them (a bulk set: by selection); else None
        self.percentiles = percentiles
        self._asc: array | None = values if isinstance(values, array) else None

    @property
    def kept(self) -> bool:
        """Are the values kept? (Else they are made again from `requests` when read.)"""
        return self._raw is not None

    @property
    def raw(self) -> Any:
        """The values in any order: kept, or made again from `requests` (not kept)."""
        if self._raw is not None:
            return self._raw
        for made in ms_chunks([self]):  # one chunk: a step's gaps
            return made
        return bulk.numpy().empty(0)

    @property
    def std(self) -> float:
        """The population std of this set alone (a step's ITL spread is computed here, when a step's own
        metrics are read: a replay of thousands of steps shows a few)."""
        if self._std is None:
            n = self.n
            m = math.fsum(self.total) / n if n else 0.0
            raw = self.raw
            self._std = bulk.stdev(raw, m) if bulk.is_array(raw) else stats.pooled_stdev((raw,), n, m)
        return self._std

    @property
    def values(self) -> array:
        """The values, ascending."""
        asc = self._asc
        if asc is None:  # a bulk set: sorted once, on first read (a stable sort, as Python's)
            asc = self._asc = array("d", bulk.sort(self.raw).tobytes())
        return asc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dist):
            return NotImplemented
        return self.values == other.values and self.total == other.total and self.std == other.std

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Dist(n={self.n}, total={self.total!r}, std={self.std!r})"


def ms_chunks(dists: Sequence[Dist]) -> Iterator[Any]:
    """The values of `dists`, in no particular order, as float64 arrays of about `bulk.CHUNK` values each
    (numpy only: a bulk set), few sets' at a time: kept values joined, ITL sets that keep none
    (`Dist.requests`) made again, their requests' gaps joined at memcpy speed and multiplied by 1000 in one
    pass, as `bulk.dist_ms_segments` made them."""
    np = bulk.numpy()
    kept: list[Any] = []
    made: list[Sequence[Request]] = []
    kept_n = made_n = 0
    for d in dists:
        if not d.n:
            continue
        if d._raw is not None:
            kept.append(d._raw)
            kept_n += d.n
            if kept_n >= bulk.CHUNK:
                yield _concatenated(kept, np)
                kept, kept_n = [], 0
        else:
            made.append(d.requests or ())
            made_n += d.n
            if made_n >= bulk.CHUNK:
                yield _joined(made, np)
                made, made_n = [], 0
    if kept:
        yield _concatenated(kept, np)
    if made:
        yield _joined(made, np)


def _concatenated(kept: list[Any], np: Any) -> Any:
    return np.concatenate([np.frombuffer(v, dtype=np.float64) if isinstance(v, array) else v for v in kept])


def _joined(made: list[Sequence[Request]], np: Any) -> Any:
    return np.frombuffer(_itl_seconds(chain.from_iterable(made)), dtype=np.float64) * 1000.0


def dist_ms(seconds: Iterable[float]) -> Dist:
    """Reduce one metric's values (seconds) to a `Dist` in ms. Each value becomes `x * 1000.0` first, so
    mean, std and percentiles are over the same ms floats as when all values were converted at once.
    A large set (a step's thousands of ITL values) is reduced by `sgtui.state.bulk`, to the same numbers;
    an `array("d")` of seconds goes to numpy without a copy."""
    if not isinstance(seconds, (list, array)) and not bulk.is_array(seconds):
        seconds = list(seconds)
    if bulk.enabled(len(seconds)) and (reduced := bulk.dist_ms(seconds, PERCENTILES)) is not None:
        return Dist(*reduced)
    ms = list(map(mul, seconds, repeat(1000.0)))
    total = stats.exact_sum(ms)
    std = stats.pooled_stdev((ms,), len(ms), math.fsum(total) / len(ms)) if ms else 0.0
    ms.sort()
    return Dist(array("d", ms), total, std)


def mean_ms(dists: Sequence[Dist]) -> float:
    """The mean of the union of `dists` (exact sums: the same whichever sets they came in)."""
    n = sum(d.n for d in dists)
    return math.fsum(chain.from_iterable(d.total for d in dists)) / n if n else 0.0


def own_percentiles(d: Dist) -> list[float]:
    """One set's PERCENTILES: found by its reduction, else by selection (a large set) or from its values."""
    chosen = d.percentiles
    if chosen is None and bulk.enabled(d.n):
        chosen = bulk.select(d.raw, PERCENTILES)
    return chosen if chosen is not None else stats.pooled_percentiles([d.values], PERCENTILES)


def _dist_fields(prefix: str, dists: Sequence[Dist]) -> dict[str, float]:
    """The mean/median/std/p50/p90/p99 fields of one metric over the union of `dists`."""
    n = sum(d.n for d in dists)
    mean = mean_ms(dists)
    pooled = bulk.pooled(lambda: ms_chunks(dists), n, mean, PERCENTILES) if len(dists) > 1 and bulk.enabled(n) \
        else None
    if len(dists) == 1:  # a step's own set: its own spread and percentiles
        std, (p50, p90, p99) = dists[0].std, own_percentiles(dists[0])
    elif pooled is not None:  # a run's millions of ITL values: in pieces, a histogram and a selection
        std, (p50, p90, p99) = pooled
    else:
        std = stats.pooled_stdev((d.values for d in dists), n, mean)
        p50, p90, p99 = stats.pooled_percentiles([d.values for d in dists], PERCENTILES)
    return {
        f"mean_{prefix}_ms": mean,
        f"median_{prefix}_ms": p50,
        f"std_{prefix}_ms": std,
        f"p50_{prefix}_ms": p50,
        f"p90_{prefix}_ms": p90,
        f"p99_{prefix}_ms": p99,
    }


@dataclass(frozen=True, slots=True)
class RequestStats:
    """A set of requests reduced once (counts, token sums, one `Dist` per latency metric): enough to
    give its `RequestMetrics` for any duration, alone or pooled with other sets."""

    completed: int
    errors: int
    input_tokens: int
    output_tokens: int
    ttft: Dist
    tpot: Dist
    itl: Dist
    e2el: Dist


def request_stats(requests: Sequence[Request]) -> RequestStats:
    """Failed requests count only as errors; TPOT only for requests with more than one output token."""
    ok = [r for r in requests if not r.error]
    multi = [r for r in ok if r.output_tokens > 1]
    return RequestStats(
        completed=len(ok),
        errors=len(requests) - len(ok),
        input_tokens=sum(r.prompt_tokens for r in ok),
        output_tokens=sum(r.output_tokens for r in ok),
        ttft=dist_ms(r.ttft for r in ok),
        tpot=dist_ms((r.latency - r.ttft) / (r.output_tokens - 1) for r in multi),
        itl=dist_ms(_itl_seconds(ok)),
        e2el=dist_ms(r.latency for r in ok),
    )


def _itl_seconds(ok: Iterable[Request]) -> array:
    """Every ITL value of the requests, in order, as one `array("d")` (each request's is one: copied at
    memcpy speed; the bulk path reads it without a copy)."""
    out = array("d")
    deque(map(out.extend, map(_ITL, ok)), maxlen=0)  # the loop at C speed
    return out


#: Field readers at C speed (`map` over them, no generator frame a request): the reductions of a long
#: replay read ~10 fields of half a million requests while the fold competes for the GIL.
_TTFT, _LATENCY, _ITL = attrgetter("ttft"), attrgetter("latency"), attrgetter("itl")
_ERROR, _IN, _OUT = attrgetter("error"), attrgetter("prompt_tokens"), attrgetter("output_tokens")


def _tpot(r: Request) -> float:
    return (r.latency - r.ttft) / (r.output_tokens - 1)


def request_stats_many(groups: Sequence[Sequence[Request]]) -> list[RequestStats]:
    """[request_stats(g) for g in groups], the same numbers, with each metric's values of every group
    reduced in one `bulk.dist_ms_segments` pass: a run's finished steps at once (a replay of a long
    session reduces thousands of steps; per step, numpy's per-call cost was most of the time)."""
    oks = [list(filterfalse(_ERROR, g)) for g in groups]
    multis = [[r for r in ok if r.output_tokens > 1] for ok in oks]
    itl_counts = [sum(map(len, map(_ITL, ok))) for ok in oks]
    counts = list(map(len, oks))
    if not bulk.enabled(sum(itl_counts) + sum(counts)):
        return [request_stats(g) for g in groups]
    every = list(chain.from_iterable(oks))
    ttft = _segments(map(_TTFT, every), counts, lambda k: map(_TTFT, oks[k]))
    tpot = _segments(map(_tpot, chain.from_iterable(multis)), list(map(len, multis)), lambda k: map(_tpot, multis[k]))
    itl = _segments(_itl_seconds(every), itl_counts, lambda k: _itl_seconds(oks[k]), spread=False, kept_by=oks)
    e2el = _segments(map(_LATENCY, every), counts, lambda k: map(_LATENCY, oks[k]))
    return [RequestStats(completed=len(ok), errors=len(g) - len(ok), input_tokens=sum(map(_IN, ok)),
                         output_tokens=sum(map(_OUT, ok)), ttft=ttft[k], tpot=tpot[k], itl=itl[k], e2el=e2el[k])
            for k, (g, ok) in enumerate(zip(groups, oks))]


def _segments(values: Iterable[float], counts: list[int], pure: Any, spread: bool = True,
              kept_by: Sequence[Sequence[Request]] | None = None) -> list[Dist]:
    """One metric's `Dist` per group from all groups' values in order (`counts` each): by segments where
    numpy can read them; `pure(k)` gives group k's values again where it cannot (not numbers, not finite).
    Without `spread`, each set's std and percentiles wait until read (a step's thousands of ITL values);
    with `kept_by` (each group's requests: ITL), its values too (`Dist.requests`)."""
    np = bulk.numpy()
    try:
        a = values if isinstance(values, array) else np.fromiter(values, dtype=float, count=sum(counts))
        reduced = bulk.dist_ms_segments(a, counts, PERCENTILES, spread)
    except (TypeError, ValueError):
        reduced = [None] * len(counts)
    if kept_by is not None:
        return [Dist(None, r[1], r[2], r[3], kept_by[k], counts[k]) if r is not None else dist_ms(pure(k))
                for k, r in enumerate(reduced)]
    return [Dist(*r) if r is not None else dist_ms(pure(k)) for k, r in enumerate(reduced)]


#: `RequestStats` fields that are `Dist`s, in the order `pack_stats` lays them out.
_DISTS = ("ttft", "tpot", "itl", "e2el")


def pack_stats(sets: Sequence[RequestStats]) -> dict[str, Any]:
    """Request sets in a few flat columns (numbers, tuples, one float64 array per metric): what a helper
    process hands back (`sgtui.state.steps.reduce_tail`). Pickled as they are, thousands of `Dist`s and
    their small arrays took ~0.3 s of the replay's GIL to load; columns load in milliseconds. An ITL set's
    requests are left out (`unpack_stats` takes them from whoever adopts the set)."""
    np = bulk.numpy()
    out: dict[str, Any] = {"counts": [(s.completed, s.errors, s.input_tokens, s.output_tokens) for s in sets]}
    for name in _DISTS:
        ds = [getattr(s, name) for s in sets]
        # how each set holds its values: 0 not kept (made from requests), 1 a numpy array, 2 an ascending array
        how = [0 if d._raw is None else (2 if isinstance(d._raw, array) else 1) for d in ds]
        kept = [np.frombuffer(d._raw, dtype=np.float64) if h == 2 else d._raw for d, h in zip(ds, how) if h]
        out[name] = (how, [d.n for d in ds], [d.total for d in ds], [d._std for d in ds],
                     [d.percentiles for d in ds], np.concatenate(kept) if kept else np.empty(0))
    return out


def unpack_stats(packed: dict[str, Any]) -> list[RequestStats]:
    """The request sets `pack_stats` packed, equal to them; kept values are views of one array per metric."""
    columns = {}
    for name in _DISTS:
        how, ns, totals, stds, pcts, values = packed[name]
        ds, at = [], 0
        for h, n, total, std, pct in zip(how, ns, totals, stds, pcts):
            raw = None
            if h:
                raw = values[at:at + n] if h == 1 else array("d", values[at:at + n].tobytes())
                at += n
            ds.append(Dist(raw, total, std, pct, None, n))
        columns[name] = ds
    return [RequestStats(*counts, *(columns[name][k] for name in _DISTS))
            for k, counts in enumerate(packed["counts"])]


def pooled_metrics(sets: Sequence[RequestStats], duration_s: float) -> RequestMetrics:
    """Metrics of the union of request sets over `duration_s`: exactly what `calculate_metrics` gives for
    all their requests at once (counts add, exact sums add, percentiles select from the sorted sets)."""
    completed = sum(s.completed for s in sets)
    total_in = sum(s.input_tokens for s in sets)
    total_out = sum(s.output_tokens for s in sets)
    dur = duration_s if duration_s > 0 else 0.0
    return RequestMetrics(
        completed=completed,
        errors=sum(s.errors for s in sets),
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        duration_s=dur,
        request_throughput=completed / dur if dur else 0.0,
        output_throughput=total_out / dur if dur else 0.0,
        total_token_throughput=(total_in + total_out) / dur if dur else 0.0,
        **_dist_fields("ttft", [s.ttft for s in sets]),
        **_dist_fields("tpot", [s.tpot for s in sets]),
        **_dist_fields("itl", [s.itl for s in sets]),
        **_dist_fields("e2el", [s.e2el for s in sets]),
    )


def calculate_metrics(requests: Iterable[Request], duration_s: float) -> RequestMetrics:
    """One pure function from request records to metrics, as vLLM's benchmark does it."""
    return pooled_metrics([request_stats(list(requests))], duration_s)

