"""Statistics over replicas (seeds, folds): one spread, bootstrap intervals, IQM, probability of improvement.

A handful of seeds says little on its own; rliable (Agarwal et al. 2021) asks for interval
estimates instead of a mean +- std. The definitions follow it: the interquartile mean is the
mean of the middle 50% (``scipy.stats.trim_mean`` cutting 25% from each end), intervals are
percentile bootstraps (``scipy.stats.bootstrap``: robust for the few, often tied, values a
sweep has, where BCa fails), and the probability of improvement P(X > Y) is the Mann-Whitney
U statistic over the n x m pairs, ties counting one half. The spread everywhere (summary.json's
``_std``, ``research.compare``) is the sample standard deviation, ``DDOF`` = 1.

Only numpy at import: the engine uses ``std``; scipy loads where an interval is drawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

DDOF = 1  # the sample standard deviation, the one spread of every replica mean
IQM_CUT = 0.25  # cut from each end: the interquartile mean


def std(values: Sequence[float] | np.ndarray) -> float | None:
    """The sample standard deviation (``DDOF``); None for fewer than two values."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(values.std(ddof=DDOF)) if values.size > DDOF else None


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean: the mean of the middle 50% of the values."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(values, dtype=np.float64), IQM_CUT))


def probability_of_improvement(x: Sequence[float], y: Sequence[float]) -> float:
    """P(X > Y) for a value X drawn from ``x`` and Y from ``y`` (ties: one half)."""
    return float(_u_fraction(np.asarray(x, np.float64), np.asarray(y, np.float64)))


def _u_fraction(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(x, y, axis=axis, method="asymptotic").statistic  # the p-value is not used
    return u / (x.shape[axis] * y.shape[axis])


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: the level, the resamples, and the seed that makes them repeatable."""

    confidence: float = 0.95
    resamples: int = 10_000
    seed: int = 0

    def interval(self, statistic: Callable, *samples: np.ndarray, axis: int = 0) -> tuple | None:
        """``scipy.stats.bootstrap``'s percentile interval of ``statistic`` (vectorised over
        ``axis``), each sample resampled on its own; None when a sample has under two values.
        """
        from scipy.stats import bootstrap

        if any(np.shape(s)[axis] < 2 for s in samples):
            return None
        result = bootstrap(
            samples,
            statistic,
            n_resamples=self.resamples,
            confidence_level=self.confidence,
            method="percentile",
            axis=axis,
            batch=self.batch(samples, axis),
            rng=np.random.default_rng(self.seed),
        )
        return result.confidence_interval.low, result.confidence_interval.high

    def batch(self, samples: Sequence[np.ndarray], axis: int) -> int | None:
        """Resamples drawn at once: all of them for one value per sample, fewer for many columns
        (the curves), so that memory stays near that of one draw of ``resamples``.
        """
        columns = max(int(np.size(s) // np.shape(s)[axis]) for s in samples)
        return None if columns <= 1 else max(1, self.resamples // columns)


@dataclasses.dataclass(frozen=True)
class Summary:
    """One metric over the replicas of one configuration."""

    n: int
    mean: float
    std: float | None
    low: float | None  # the bootstrap interval of the mean
    high: float | None
    iqm: float


def summarize(values: Sequence[float], boot: Bootstrap) -> Summary:
    x = np.asarray(values, dtype=np.float64)
    interval = boot.interval(np.mean, x, axis=-1)
    low, high = (float(v) for v in interval) if interval else (None, None)
    return Summary(len(x), float(x.mean()), std(x), low, high, iqm(x))


@dataclasses.dataclass(frozen=True)
class Improvement:
    """P(X > Y) between two configurations, with its bootstrap interval (each resampled on its own)."""

    p: float
    low: float | None
    high: float | None
    pairs: int


def improvement(x: Sequence[float], y: Sequence[float], boot: Bootstrap) -> Improvement:
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    interval = boot.interval(_u_fraction, a, b, axis=-1)
    low, high = (float(v) for v in interval) if interval else (None, None)
    return Improvement(probability_of_improvement(a, b), low, high, a.size * b.size)


def mean_bands(columns: np.ndarray, boot: Bootstrap) -> tuple[np.ndarray, np.ndarray] | None:
    """The bootstrap interval of the mean of each column of an (n, steps) array: a curve's band."""
    interval = boot.interval(np.mean, np.asarray(columns, np.float64), axis=0)
    return None if interval is None else (np.asarray(interval[0]), np.asarray(interval[1]))
