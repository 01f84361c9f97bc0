"""Pooled statistics (a run's numbers from its steps' reduced sets) equal the plain ones over all values,
bit for bit, and the plain ones equal numpy's."""

import math
import random

import numpy as np
import pytest

from sgtui import stats


def value_sets(seed: int, n_sets: int, max_len: int, long: bool = False) -> list[list[float]]:
    """Sets with ties (values from a small pool), zeros, negatives, single values and empty sets;
    `long`: mostly sets of max_len / 2 values or more (as a run's steps' ITL values)."""
    rnd = random.Random(seed)
    pool = [0.0, 1.0, 2.5, -3.0, 1e-9, 7.25]
    out = []
    for i in range(n_sets):
        n = rnd.choice([0, 1, 2, rnd.randint(0, max_len)])
        if long and i % 5:
            n = rnd.randint(max_len // 2, max_len)
        out.append([rnd.choice(pool) if rnd.random() < 0.4 else rnd.uniform(-5, 50) for _ in range(n)])
    return out


@pytest.mark.parametrize("seed", range(20))
def test_percentile_is_numpys_linear_one(seed):
    for xs in value_sets(seed, 30, 200):
        for q in (0, 1, 50, 90, 99, 99.9, 100):
            want = float(np.percentile(xs, q)) if xs else 0.0
            assert stats.percentile(xs, q) == pytest.approx(want, rel=1e-12, abs=1e-12), (xs, q)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("n_sets,max_len,searched", [(40, 20, False), (6, 2000, True), (60, 1000, True)])
def test_pooled_percentiles_equal_percentiles_of_the_union(seed, n_sets, max_len, searched):
    sets = value_sets(seed, n_sets, max_len, long=searched)
    union = [x for s in sets for x in s]
    if searched:  # long sets: found by `kth_smallest`, not by merging
        assert len(union) > stats.MERGE_BELOW_MEAN_LEN * sum(1 for s in sets if s)
    qs = (0, 50, 90, 99, 100)
    got = stats.pooled_percentiles([sorted(s) for s in sets], qs)
    assert got == stats.percentiles(union, qs)
    if union:
        assert got == pytest.approx([float(np.percentile(union, q)) for q in qs], rel=1e-12, abs=1e-12)


def test_kth_smallest_finds_every_rank_of_a_union_with_ties():
    sets = [sorted(s) for s in value_sets(3, 12, 30) if s]
    union = sorted(x for s in sets for x in s)
    assert [stats.kth_smallest(sets, k) for k in range(len(union))] == union


def test_kth_smallest_across_signs_and_magnitudes():
    sets = [[-1e300, -2.0, -1e-300], [0.0, 5e-324, 1.0], [3.0, 1e308, math.inf]]
    union = sorted(x for s in sets for x in s)
    assert [stats.kth_smallest(sets, k) for k in range(len(union))] == union


@pytest.mark.parametrize("seed", range(10))
def test_exact_sums_pool_to_the_fsum_of_all_values(seed):
    rnd = random.Random(seed)
    sets = [[rnd.uniform(-1, 1) * 10 ** rnd.randint(-12, 16) for _ in range(rnd.randint(0, 300))]
            for _ in range(50)]
    sets.append([1e16, 1.0, -1e16, 1e-16])  # cancellation: the naive sum is 0.0
    pooled = math.fsum(p for s in sets for p in stats.exact_sum(s))
    assert pooled == math.fsum(x for s in sets for x in s)
    assert stats.exact_sum([]) == () and stats.exact_sum([0.5]) == (0.5,)


@pytest.mark.parametrize("seed", range(10))
def test_pooled_stdev_is_stdev_of_the_union_bit_for_bit(seed):
    sets = value_sets(seed, 20, 300)
    union = [x for s in sets for x in s]
    n = len(union)
    m = math.fsum(union) / n
    want = math.sqrt(math.fsum((x - m) * (x - m) for x in union) / n)  # the definition, term by term
    assert stats.pooled_stdev(sets, n, m) == want == stats.stdev(union)
    assert stats.stdev(union) == pytest.approx(float(np.std(union)), rel=1e-9)
    assert stats.stdev([4.0]) == 0.0 and stats.stdev([]) == 0.0


@pytest.mark.parametrize("df, want", [(1, 12.7062), (1.9, 4.5271), (2, 4.3027), (2.5, 3.5747), (3, 3.1824),
                                      (10, 2.2281), (30, 2.0423), (1e4, 1.9602), (1e9, 1.9600)])
def test_t_critical_95_is_exact_at_fractional_df(df, want):
    # Welch's df is fractional: a table at floor(df) gave 12.706 for df 1.9 (exact 4.527). Values: t tables;
    # for 1.9 and 2.5 the t density integrated numerically (numpy, 2e6 points) up to the value gives 0.475.
    assert stats.t_critical_95(df) == pytest.approx(want, abs=1e-3)


def test_t_quantile_is_the_inverse_of_the_t_tail():
    for df in (1.0, 1.3, 4.7, 57.0):
        for p in (0.6, 0.9, 0.995):
            q = stats.t_quantile(p, df)
            assert stats.t_sf(q, df) == pytest.approx(1 - p, rel=1e-9)
            assert stats.t_quantile(1 - p, df) == -q
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)
