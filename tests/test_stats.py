"""helpers.stats: Wilson against the formula by hand, bootstrap coverage by simulation."""

import math

import numpy as np
import pandas as pd
import pytest

from helpers import stats


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(1, 10), (5, 10), (9, 10), (37, 50), (3, 8)])
def test_wilson_matches_formula(k, n):
    low, high = stats.wilson(k, n)
    hl, hh = _wilson_by_hand(k, n)
    assert low == pytest.approx(hl, abs=1e-12) and high == pytest.approx(hh, abs=1e-12)


def test_wilson_reference_values():
    # 0/10: low 0, high = z^2/(n+z^2) = 3.8415/13.8415 = 0.27753 (closed form at k = 0)
    low, high = stats.wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(3.841458820694124 / 13.841458820694124, abs=1e-12)
    # 10/10 is the mirror image
    low, high = stats.wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / 13.841458820694124, abs=1e-12)
    # 5/10 is symmetric about 0.5: half-width z*sqrt(0.025+z^2/400)/(1+z^2/10)
    low, high = stats.wilson(5, 10)
    assert (low + high) / 2 == pytest.approx(0.5)
    assert high - 0.5 == pytest.approx(
        1.96 * math.sqrt(0.025 + 1.96**2 / 400) / (1 + 1.96**2 / 10), abs=1e-3
    )


def test_wilson_vectorised_and_empty():
    low, high = stats.wilson(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert low.shape == (3,) and np.all(low <= high)
    assert math.isnan(stats.wilson(0, 0)[0])
    with pytest.raises(ValueError):
        stats.wilson(11, 10)


def test_wilson_coverage_by_simulation():
    rng = np.random.default_rng(1)
    n, p = 50, 0.8
    k = rng.binomial(n, p, size=20000)
    low, high = stats.wilson(k, np.full_like(k, n))
    cover = np.mean((low <= p) & (p <= high))
    assert 0.93 <= cover <= 0.97


def test_bootstrap_is_seeded_and_returns_replicates():
    v = np.arange(20.0)
    a = stats.bootstrap(v, np.median, seed=3, return_replicates=True)
    b = stats.bootstrap(v, np.median, seed=3, return_replicates=True)
    assert a.estimate == 9.5 and a.n == 20
    assert a.low == b.low and a.high == b.high and np.array_equal(a.replicates, b.replicates)
    assert a.replicates.shape == (2000,)
    assert a.low < 9.5 < a.high


def test_bootstrap_empty_single_and_nan():
    e = stats.bootstrap([], np.median)
    assert e.n == 0 and math.isnan(e.estimate)
    e = stats.bootstrap([4.0], np.median)
    assert e.estimate == e.low == e.high == 4.0
    e = stats.bootstrap([1.0, np.nan, 3.0], np.mean)
    assert e.n == 2 and e.estimate == 2.0


def test_bootstrap_coverage_of_the_mean_by_simulation():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 400
    for t in range(trials):
        x = rng.normal(1.0, 2.0, size=50)
        e = stats.bootstrap(x, np.mean, n_boot=1000, seed=t)
        hits += e.low <= 1.0 <= e.high
    assert 0.91 <= hits / trials <= 0.98


def test_bootstrap_coverage_of_the_median_by_simulation():
    rng = np.random.default_rng(5)
    hits = 0
    trials = 400
    true_median = math.log(2)  # exponential(1)
    for t in range(trials):
        x = rng.exponential(1.0, size=40)
        e = stats.bootstrap(x, np.median, n_boot=1000, seed=t)
        hits += e.low <= true_median <= e.high
    assert 0.90 <= hits / trials <= 0.985


def test_bootstrap_of_a_row_statistic():
    # 2-D sample: rows (confidence, correct); statistic = mean gap
    rows = np.column_stack([np.full(30, 0.9), np.r_[np.ones(27), np.zeros(3)]])
    e = stats.bootstrap(rows, lambda a: abs(a[:, 0].mean() - a[:, 1].mean()), n_boot=300)
    assert e.estimate == pytest.approx(0.0, abs=1e-12) and e.high > 0


def test_per_group_wilson_and_bootstrap():
    f = pd.DataFrame(
        {
            "c": ["a"] * 10 + ["b"] * 4,
            "ok": [1] * 7 + [0] * 3 + [1, 1, 0, 0],
            "x": np.r_[np.arange(10.0), [5, 6, 7, 8]],
        }
    )
    t = stats.per_group(f, "c", "ok", groups=["a", "b", "z"])
    assert list(t.index) == ["a", "b", "z"]
    assert t.loc["a", "value"] == 0.7 and t.loc["a", "n"] == 10
    assert (t.loc["a", "low"], t.loc["a", "high"]) == pytest.approx(_wilson_by_hand(7, 10))
    assert t.loc["z", "n"] == 0 and math.isnan(t.loc["z", "value"])
    m = stats.per_group(f, "c", "x", stat=np.median)
    assert m.loc["a", "value"] == 4.5 and m.loc["b", "value"] == 6.5
    assert m.loc["a", "low"] <= 4.5 <= m.loc["a", "high"]


def test_bootstrap_keeps_infinite_replicates():
    # 6 of 10 values never flipped (inf): the median is inf and so is the upper end
    v = np.r_[np.ones(4), np.full(6, np.inf)]
    e = stats.bootstrap(v, np.median, n_boot=500)
    assert e.estimate == np.inf and e.high == np.inf and not math.isnan(e.low)
