"""research.statistics against definitions computed here: numpy by hand, scipy with the same seed."""

from __future__ import annotations

import itertools
import statistics as stdlib

import numpy as np
import pytest
from scipy.stats import bootstrap

from research import statistics


def test_std_is_the_sample_std_and_none_for_one_value():
    values = [0.91, 0.93, 0.92, 0.97]
    assert statistics.std(values) == pytest.approx(stdlib.stdev(values), abs=1e-15)
    assert statistics.std(np.array([[0.5], [0.7]])) == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert statistics.std([0.5]) is None


@pytest.mark.parametrize(
    ("values", "middle"), [([5, 1, 4, 2, 3, 100, 0, 6], [2, 3, 4, 5]), ([9, 1, 5, 3, 7], [3, 5, 7])]
)
def test_iqm_is_the_mean_of_the_middle_half(values, middle):
    assert statistics.iqm(values) == pytest.approx(np.mean(middle))


def test_probability_of_improvement_counts_pairs_with_ties_as_half():
    x, y = [0.9, 0.8, 0.8, 0.7], [0.8, 0.6, 0.95]
    pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(x, y)]
    assert statistics.probability_of_improvement(x, y) == pytest.approx(np.mean(pairs))
    assert statistics.probability_of_improvement(y, x) == pytest.approx(1 - np.mean(pairs))


def test_intervals_are_scipys_percentile_bootstrap_with_the_seed():
    x = np.array([0.91, 0.93, 0.92, 0.95, 0.94, 0.93, 0.90, 0.96])
    boot = statistics.Bootstrap(confidence=0.9, resamples=3000, seed=11)
    summary = statistics.summarize(x, boot)
    reference = bootstrap(
        (x,),
        np.mean,
        n_resamples=3000,
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert (summary.low, summary.high) == pytest.approx((reference.low, reference.high), abs=1e-12)
    assert (
        summary.n == 8
        and summary.mean == pytest.approx(x.mean())
        and summary.low < summary.mean < summary.high
    )
    single = statistics.summarize([0.5], boot)
    assert (single.low, single.high, single.std, single.iqm) == (None, None, None, 0.5)
    assert statistics.improvement([0.5], [0.4, 0.6], boot).low is None


def test_curve_bands_cover_each_step_at_once():
    rng = np.random.default_rng(0)
    columns = rng.normal(size=(8, 50)) + np.arange(50)
    low, high = statistics.mean_bands(columns, statistics.Bootstrap(resamples=2000))
    assert low.shape == high.shape == (50,)
    assert np.all(low < columns.mean(0)) and np.all(columns.mean(0) < high)
    assert statistics.mean_bands(columns[:1], statistics.Bootstrap()) is None
