"""Univariate forecasting on statsmodels' bundled series: weekly ``co2`` and yearly ``sunspots``.

``co2``: Mauna Loa CO2 (ppm), 2284 weeks 1958-2001, 59 weeks missing; each gap is filled
by linear interpolation between the nearest observed weeks on either side (no gap
touches either end; the longest is 18 weeks), which on this equally spaced series is
pandas' ``interpolate(method="time")``. ``sunspots``: yearly sunspot numbers 1700-2008.

Split on the time axis: the first ``1 - val_fraction - test_fraction`` of the points is
train, then val, then the last ``test_fraction`` is test. An example at time ``t`` is
``x`` = the ``window`` points before ``t``, (window, 1), and ``y`` = the ``horizon``
points from ``t``, (horizon,); it belongs to the part that holds all of ``y`` (its ``x``
may reach back into the part before: those points are known when forecasting).
The series is standardised with the training part's mean and std only.

``info["baseline_test_rmse"]``: on the test examples, in the series' own units, the
last-value forecast (every ``y`` equals the last ``x``) and the seasonal-naive one (each
``y`` point equals the point ``season`` steps earlier, seen in ``x`` as window >= season).
"""

from __future__ import annotations

import numpy as np

from research.data.arrays import SPLITS, make_dataset
from research.data.base import Dataset
from research.errors import ConfigError, DataError


def co2() -> np.ndarray:
    """The weekly co2 series with its 59 gaps linearly interpolated (module docstring)."""
    from statsmodels.datasets import co2 as dataset

    values = dataset.load_pandas().data["co2"].to_numpy(np.float64)
    known = ~np.isnan(values)
    positions = np.arange(len(values))
    return np.interp(positions, positions[known], values[known])


def sunspots() -> np.ndarray:
    """Yearly sunspot numbers, 1700-2008 (309 points, none missing)."""
    from statsmodels.datasets import sunspots as dataset

    return dataset.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)


SERIES = {"co2": co2, "sunspots": sunspots}


def boundaries(length: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """{split: (first, end) point index} of the chronological parts."""
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction and data.test_fraction must be positive with a sum < 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    val_start = round((1 - val_fraction - test_fraction) * length)
    test_start = round((1 - test_fraction) * length)
    return {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, length)}


def windows(values: np.ndarray, first: int, end: int, window: int, horizon: int) -> tuple[np.ndarray, ...]:
    """(starts, x (N, window, 1), y (N, horizon)) of every example whose ``y`` lies in [first, end)."""
    starts = np.arange(max(first, window), end - horizon + 1)
    x = np.stack([values[t - window : t] for t in starts]) if len(starts) else np.zeros((0, window))
    y = np.stack([values[t : t + horizon] for t in starts]) if len(starts) else np.zeros((0, horizon))
    return starts, x[..., None], y


def naive_forecasts(
    values: np.ndarray, starts: np.ndarray, horizon: int, season: int
) -> dict[str, np.ndarray]:
    """(N, horizon) forecasts of the two baselines, from the points before each start only."""
    steps = np.arange(horizon)
    seasonal = starts[:, None] + steps - season * (1 + steps // season)  # latest same-season point
    return {
        "last_value": np.repeat(values[starts - 1][:, None], horizon, axis=1),
        "seasonal_naive": values[seasonal],
    }


def load(
    name: str,
    window: int,
    horizon: int,
    season: int,
    val_fraction: float,
    test_fraction: float,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """``x`` (window, 1) and ``y`` (horizon,) float32, standardised by the training part."""
    if name not in SERIES:
        raise ConfigError(f"data.name must be one of {sorted(SERIES)}, got {name!r}")
    for key, value in (("window", window), ("horizon", horizon), ("season", season)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
    if window < season:
        raise ConfigError(f"data.window={window} must be >= data.season={season} (seasonal-naive baseline)")
    values = SERIES[name]()
    parts = boundaries(len(values), val_fraction, test_fraction)
    first, end = parts["train"]
    mean, std = float(values[first:end].mean()), float(values[first:end].std())
    scaled = (values - mean) / std
    splits, starts = {}, {}
    for split in SPLITS:
        starts[split], x, y = windows(scaled, *parts[split], window, horizon)
        splits[split] = {"x": x.astype(np.float32), "y": y.astype(np.float32)}
    if not len(starts["test"]):
        raise DataError(f"{name} has no test example: lower data.window or data.horizon")
    targets = np.stack([values[t : t + horizon] for t in starts["test"]])
    baselines = {
        kind: float(np.sqrt(np.mean((forecast - targets) ** 2)))
        for kind, forecast in naive_forecasts(values, starts["test"], horizon, season).items()
    }
    info = {
        "y_mean": mean,  # the series' scaler (x and y alike), fitted on the training part
        "y_std": std,
        "season": season,
        "window": window,
        "horizon": horizon,
        "boundaries": parts,
        "starts": {split: starts[split].tolist() for split in SPLITS},
        "baseline_test_rmse": baselines,
    }
    return make_dataset(
        name, splits, batch_size, eval_batch_size, input_shape=(window, 1), info=info,
        empty_hint="lower data.window or data.horizon, or raise data.val_fraction / data.test_fraction",
    )  # fmt: skip
