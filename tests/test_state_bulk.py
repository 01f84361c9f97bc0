"""The numpy path of the request metrics (`sgtui.state.bulk`) gives the pure path's numbers bit for bit."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from sgtui import stats
from sgtui.state import bulk, dist_ms, load_state, pooled_metrics, run_summary
from sgtui.state.metrics import PERCENTILES
from tests.gen import generate


def values(seed: int, n: int) -> list[float]:
    """Latency-like seconds with ties, zeros, ints and a wide range: where rounding differences would show."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.05:
            out.append(0)
        elif r < 0.1:
            out.append(rnd.choice([0.001, 0.25, 1]))
        else:
            out.append(rnd.lognormvariate(-4, 1.5))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_bulk_dist_equals_the_pure_reduction(seed, monkeypatch):
    xs = values(seed, 5000)
    assert bulk.enabled(len(xs))
    got = dist_ms(xs)
    monkeypatch.setattr(bulk, "BULK_MIN", 1 << 62)
    want = dist_ms(xs)
    assert got.values == want.values and got.total == want.total and got.std == want.std
    # and the pure spread is the one written out term for term (products, as numpy's std squares)
    ms = [x * 1000.0 for x in xs]
    m = math.fsum(ms) / len(ms)
    assert got.std == math.sqrt(math.fsum((x - m) * (x - m) for x in ms) / len(ms))


@pytest.mark.parametrize("seed", range(4))
def test_bulk_pooling_equals_the_pure_pooling(seed, monkeypatch):
    rnd = random.Random(seed)
    sets = [dist_ms(values(seed * 100 + i, rnd.randint(0, 900))) for i in range(12)]
    got = pooled_metrics([_stats(d) for d in sets], 10.0)
    monkeypatch.setattr(bulk, "BULK_MIN", 1 << 62)
    want = pooled_metrics([_stats(d) for d in sets], 10.0)
    assert dataclasses.asdict(got) == dataclasses.asdict(want)
    union = sorted(x for d in sets for x in d.values)
    assert got.p99_itl_ms == stats.percentile(union, 99, presorted=True)


@pytest.mark.parametrize("zeros", [(), (0.0,), (-0.0,), (0.0, -0.0, 0.0)])
@pytest.mark.parametrize("seed", range(3))
def test_one_bulk_set_selects_the_pure_percentiles(seed, zeros, monkeypatch):
    """A step's own set: its percentiles by selection (no sort), the pure numbers; its values sort as Python's,
    -0.0 and 0.0 in the order they came, whichever way the percentiles were found."""
    rnd = random.Random(seed)
    xs = values(seed, 3000)
    for z in zeros:
        for _ in range(4000):  # enough zeros that the median falls among them
            xs.insert(rnd.randrange(len(xs) + 1), z)
    got_d = dist_ms(xs)
    assert got_d.percentiles is not None
    got = pooled_metrics([_stats(got_d)], 10.0)
    monkeypatch.setattr(bulk, "BULK_MIN", 1 << 62)
    want_d = dist_ms(xs)
    want = pooled_metrics([_stats(want_d)], 10.0)
    assert [struct_bits(x) for x in dataclasses.astuple(got)] == [struct_bits(x) for x in dataclasses.astuple(want)]
    assert [struct_bits(x) for x in got_d.values] == [struct_bits(x) for x in want_d.values]


def struct_bits(x):
    """A float's bits (-0.0 != 0.0 here, nan == nan), an int as it is."""
    return x if isinstance(x, int) else math.copysign(1.0, x) if x == 0 else "nan" if math.isnan(x) else x


def _stats(d):
    from sgtui.state import RequestStats

    return RequestStats(d.n, 0, 0, 0, d, d, d, d)


def test_squares_are_products_as_numpys_std():
    """The case both paths must square alike: values where x * x and x ** 2 (libm's pow) round differently.
    The spread is numpy's (`vllm bench serve`'s std): products."""
    rnd = random.Random(7)
    xs = [rnd.uniform(-20, 20) for _ in range(200_000)]
    differ = [x for x in xs if x * x != x ** 2]
    assert differ  # such values exist on this C library
    np = bulk.numpy()
    m = 0.25
    d = np.array(differ) - m
    assert bulk.stdev(np.array(differ), m) == stats.pooled_stdev([differ], len(differ), m) == \
        math.sqrt(math.fsum((x - m) * (x - m) for x in differ) / len(differ))
    assert stats.pooled_stdev([differ], len(differ), m) == pytest.approx(float(np.sqrt(np.mean(d * d))), rel=1e-12)


@pytest.mark.parametrize("chunk,bins", [(bulk.CHUNK, bulk.BINS), (1000, 4)])
def test_run_summaries_are_the_same_on_both_paths(chunk, bins, monkeypatch):
    evs = generate(steps=4, requests=40, itl_len=64, seed=3)  # 2560 ITL values a step: the bulk path
    monkeypatch.setattr(bulk, "CHUNK", chunk)  # a run's ITL values pooled in pieces, a step each
    monkeypatch.setattr(bulk, "BINS", bins)  # percentiles found in bins of many values
    st = load_state(evs)
    got = {lbl: run_summary(r, st.gpu) for lbl, r in st.runs.items()}
    monkeypatch.setattr(bulk, "BULK_MIN", 1 << 62)
    st2 = load_state(evs)
    want = {lbl: run_summary(r, st2.gpu) for lbl, r in st2.runs.items()}
    for lbl in want:
        assert dataclasses.asdict(got[lbl].metrics) == dataclasses.asdict(want[lbl].metrics)
        assert [dataclasses.asdict(s.metrics) for s in got[lbl].steps] == \
            [dataclasses.asdict(s.metrics) for s in want[lbl].steps]


@pytest.mark.parametrize("bins", [1 << 16, 8, 1])
@pytest.mark.parametrize("seed", range(4))
def test_pooled_pieces_give_the_union_s_order_statistics(seed, bins, monkeypatch):
    """Pieces of any size, values over hundreds of binades (up to VALUE_LIMIT) and of both signs, ties: the
    histogram's bins (few or many values each, wanted ranks in one bin or several) pick exactly the sorted
    union's values."""
    np = bulk.numpy()
    rnd = random.Random(seed)
    xs = values(seed, 3000) + [-x for x in values(seed + 50, 300)] + \
        [rnd.choice([-1, 1]) * 10.0 ** rnd.randint(-300, 15) for _ in range(40 * seed)] + [7.5] * 500
    rnd.shuffle(xs)
    cuts = sorted(rnd.sample(range(1, len(xs)), 9)) if seed % 2 else []
    pieces = [np.array(xs[a:b], dtype=np.float64) for a, b in zip([0, *cuts], [*cuts, len(xs)])]
    monkeypatch.setattr(bulk, "BINS", bins)
    m = math.fsum(xs) / len(xs)
    std, pcts = bulk.pooled(lambda: iter(pieces), len(xs), m, PERCENTILES + (0.0, 100.0))
    assert pcts == stats.percentiles(xs, PERCENTILES + (0.0, 100.0))
    assert std == stats.pooled_stdev([xs], len(xs), m)
    assert bulk.pooled(lambda: iter([*pieces, np.array([math.nan])]), len(xs) + 1, m, PERCENTILES) is None


def test_percentile_ranks_cover_every_order_statistic_read():
    for n in (1, 2, 3, 10, 1001):
        ranks = bulk._ranks(n, PERCENTILES)
        xs = list(range(n))
        seen = []
        stats._interpolate(n, 50.0, lambda i: seen.append(i) or xs[i])
        stats._interpolate(n, 99.0, lambda i: seen.append(i) or xs[i])
        assert set(seen) <= set(ranks)


def awkward_arrays():
    """Sums where a sloppy exact sum would show: cancellation, wide exponents, subnormals, ties, signs."""
    rnd = random.Random(11)
    yield [0.0, -0.0, 0.0]
    yield [1e16, 1.0, -1e16, 1.0]
    yield [5e-324, 5e-324, 1e-310, -2.5e-320]
    yield [1.0, 2.0 ** -53, 2.0 ** -53]  # a tie, rounded to even
    yield [rnd.uniform(-1, 1) * 10.0 ** rnd.randint(-300, 300) for _ in range(3000)]
    yield [rnd.lognormvariate(0, 3) for _ in range(5000)] + [-x for x in (1e3, 1e4)]
    yield [0.1] * 10 + [-0.3] * 3


@pytest.mark.parametrize("xs", list(awkward_arrays()))
def test_exact_sums_equal_fsums(xs, monkeypatch):
    np = bulk.numpy()
    a = np.array(xs, dtype=np.float64)
    assert bulk.exact_sum(a) == stats.exact_sum(xs)
    assert bulk.fsum(a) == math.fsum(xs)
    monkeypatch.setattr(bulk, "CHUNK", 7)  # sums carried across chunks of other exponents
    assert bulk.exact_sum(a) == stats.exact_sum(xs)
    assert bulk.fsum(a) == math.fsum(xs)
    monkeypatch.setattr(bulk, "PIECE", 3)  # chunks cut in equal pieces (a matrix) and a shorter one
    monkeypatch.setattr(bulk, "CHUNK", 1000)
    assert bulk.exact_sum(a) == stats.exact_sum(xs)
    monkeypatch.setattr(bulk, "LEVELS", 1)  # what one extraction round leaves is summed in Python
    assert bulk.exact_sum(a) == stats.exact_sum(xs)
    m = math.fsum(xs) / len(xs)
    if all(math.isfinite((x - m) * (x - m)) for x in xs):
        assert bulk.stdev(a, m) == stats.pooled_stdev([xs], len(xs), m)


def request_groups(seed: int) -> list[list]:
    """Steps' requests with what a segment pass could get wrong: failed requests, one-token answers, groups of
    one length (reduced as one matrix), empty groups, ints, signed zeros, non-finite values (in memory only)."""
    from sgtui.events import Request

    rnd = random.Random(seed)
    groups = []
    for g in range(40):
        reqs = []
        for i in range(rnd.choice([0, 1, 3, 16, 16, 16, 40])):
            itl = values(seed * 1000 + g * 50 + i, rnd.choice([0, 1, 7, 64, 64]))
            if g % 13 == 5 and itl:
                itl[0] = -0.0  # a signed zero beside the zeros `values` gives
            if g == 17 and i == 1:
                itl.append(math.inf)
            reqs.append(Request(t=1.0, run="r", step=g, start=0.5, ttft=rnd.choice([0, 0.1, rnd.random()]),
                                latency=1.0 + rnd.random(), itl=itl, prompt_tokens=10,
                                output_tokens=rnd.choice([1, 2, len(itl) + 1]), error="boom" if i % 9 == 8 else ""))
        groups.append(reqs)
    return groups


@pytest.mark.parametrize("seed", range(3))
def test_steps_reduced_together_equal_each_reduced_alone(seed, monkeypatch):
    from sgtui.state import request_stats, request_stats_many

    groups = request_groups(seed)
    got = request_stats_many(groups)
    monkeypatch.setattr(bulk, "CHUNK", 97)  # segments split across chunks and matrices
    chunked = request_stats_many(groups)
    monkeypatch.setattr(bulk, "BULK_MIN", 1 << 62)
    want = [request_stats(g) for g in groups]
    for a, b, w in zip(got, chunked, want):
        for name in ("ttft", "tpot", "itl", "e2el"):
            da, db, dw = getattr(a, name), getattr(b, name), getattr(w, name)
            assert [struct_bits(x) for x in da.values] == [struct_bits(x) for x in dw.values]
            assert da.total == db.total == dw.total
            assert struct_bits(da.std) == struct_bits(db.std) == struct_bits(dw.std)
        ma, mw = pooled_metrics([a], 3.0), pooled_metrics([w], 3.0)
        assert [struct_bits(x) for x in dataclasses.astuple(ma)] == [struct_bits(x) for x in dataclasses.astuple(mw)]
    pooled = [pooled_metrics(sets, 9.0) for sets in (got, chunked, want)]
    assert len({tuple(map(struct_bits, dataclasses.astuple(m))) for m in pooled}) == 1


@pytest.mark.parametrize("bulk_min", [bulk.BULK_MIN, 1 << 62])
def test_step_samples_are_the_step_metrics_fields(bulk_min, monkeypatch):
    """The verdict's per-step samples come without the step's ITL spread and percentiles (computed only
    when its metrics are read): the same numbers as the step's metrics, on both paths."""
    from sgtui.state import step_metrics
    from sgtui.state.steps import SAMPLED, step_samples

    monkeypatch.setattr(bulk, "BULK_MIN", bulk_min)
    st = load_state(generate(steps=5, requests=40, itl_len=64, seed=4, noise=0.3))
    for run in st.runs.values():
        for n in run.rl_steps:
            got = step_samples(run.steps[n])
            want = step_metrics(run.steps[n])
            assert got == {k: getattr(want, k) for k in SAMPLED} and want.completed
        summary = run_summary(run, st.gpu)
        assert [s.metrics for s in summary.steps] == [step_metrics(run.steps[n]) for n in run.rl_steps]


def test_packed_request_sets_come_back_equal_whatever_holds_their_values():
    """`pack_stats` / `unpack_stats` (a helper's reductions on their way back): sets reduced in pure Python
    (ascending arrays), by numpy (kept arrays) and ITL sets that keep no values all come back with the same
    numbers, kinds of storage and no requests; a pooled run over them is the pooled run over the originals."""
    import pickle
    from array import array

    from sgtui.events import Request
    from sgtui.state import request_stats_many
    from sgtui.state.metrics import pack_stats, unpack_stats

    rnd = random.Random(3)
    groups = [[Request(t=1.0, run="r", step=k, ttft=rnd.random(), latency=1 + rnd.random(), output_tokens=40,
                       itl=[rnd.random() / 50 for _ in range(39)], error="x" if i == 3 else "")
               for i in range(n)] for k, n in enumerate([30, 2, 0, 45], 1)]
    sets = request_stats_many(groups) + request_stats_many(groups[1:2])  # bulk sets, then a small pure one
    back = unpack_stats(pickle.loads(pickle.dumps(pack_stats(sets))))
    assert all(b.itl.requests is None and not b.itl.kept for b in back[:4] if b.itl.n)
    for b, g in zip(back[:4], groups):  # as the adopting step does: its own requests
        b.itl.requests = [r for r in g if not r.error]
    assert back == sets
    kinds = {(type(getattr(a, m)._raw), type(getattr(b, m)._raw)) for a, b in zip(sets, back)
             for m in ("ttft", "tpot", "itl", "e2el")}
    assert kinds >= {(array, array), (type(None), type(None))} and any(k[0] is not array and k[0] is not type(None)
                                                                        for k in kinds)
    assert pooled_metrics(back, 9.0) == pooled_metrics(sets, 9.0)
