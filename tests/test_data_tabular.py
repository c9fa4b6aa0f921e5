"""Regression and forecasting data: diabetes, co2 and sunspots; splits, scalers fitted on train, baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from research.data import tabular, timeseries
from research.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def config(dataset: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / f"conf/data/{dataset}.yaml"))
    del cfg["_target_"]
    return {**cfg, **overrides}


@pytest.fixture(scope="module")
def diabetes():
    return tabular.load_diabetes(**config("diabetes"))


def test_diabetes_splits_are_disjoint_fixed_by_seed_and_cover_every_row(diabetes) -> None:
    rows = {s: set(diabetes.info["rows"][s]) for s in ("train", "val", "test")}
    assert [len(rows[s]) for s in ("train", "val", "test")] == [319, 35, 88]
    assert (
        not rows["train"] & rows["test"]
        and not rows["train"] & rows["val"]
        and not rows["val"] & rows["test"]
    )
    assert rows["train"] | rows["val"] | rows["test"] == set(range(442))
    again = tabular.load_diabetes(**config("diabetes"))
    assert again.info["rows"] == diabetes.info["rows"]
    moved = tabular.load_diabetes(**config("diabetes", split_seed=1))
    assert moved.info["rows"]["test"] != diabetes.info["rows"]["test"]
    for s in ("train", "val", "test"):
        a = diabetes.splits[s].arrays()
        assert a["x"].shape == (len(rows[s]), 10) and a["y"].shape == (len(rows[s]), 1)
        assert a["x"].dtype == a["y"].dtype == np.float32
    assert diabetes.input_shape == (10,) and diabetes.num_classes is None


def test_diabetes_scalers_are_fitted_on_the_training_rows_only(diabetes) -> None:
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(scaled=False)
    train_rows = diabetes.info["rows"]["train"]
    assert np.allclose(diabetes.info["x_mean"], raw.data[train_rows].mean(axis=0))
    assert diabetes.info["y_mean"] == pytest.approx(raw.target[train_rows].mean())
    train, test = diabetes.splits["train"].arrays(), diabetes.splits["test"].arrays()
    assert np.allclose(train["x"].mean(axis=0), 0, atol=1e-5) and np.allclose(
        train["x"].std(axis=0), 1, atol=1e-4
    )
    assert abs(float(train["y"].mean())) < 1e-5
    assert np.abs(test["x"].mean(axis=0)).max() > 1e-3  # test rows were not part of the fit
    original = test["y"][:, 0] * diabetes.info["y_std"] + diabetes.info["y_mean"]
    assert np.allclose(original, raw.target[diabetes.info["rows"]["test"]], atol=1e-3)
    rmse = np.sqrt(np.mean((raw.target[diabetes.info["rows"]["test"]] - raw.target[train_rows].mean()) ** 2))
    assert diabetes.info["baseline_test_rmse"]["train_mean"] == pytest.approx(rmse)


def test_diabetes_bad_fractions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="data.test_fraction"):
        tabular.load_diabetes(**config("diabetes", test_fraction=1.0))
    with pytest.raises(ConfigError, match="data.batch_size=1000 exceeds"):
        tabular.load_diabetes(**config("diabetes", batch_size=1000))


@pytest.fixture(scope="module")
def co2():
    return timeseries.load(**config("co2"))


def test_co2_gaps_are_filled_by_linear_interpolation_in_time() -> None:
    from statsmodels.datasets import co2 as dataset

    raw = dataset.load_pandas().data["co2"]
    assert int(raw.isna().sum()) == 59
    assert np.allclose(timeseries.co2(), raw.interpolate(method="time").to_numpy())


def test_co2_windows_are_chronological_and_each_targets_one_part(co2) -> None:
    window, horizon = co2.info["window"], co2.info["horizon"]
    parts, starts = co2.info["boundaries"], co2.info["starts"]
    assert parts["test"] == (round(0.8 * 2284), 2284) and parts["val"][0] == round(0.7 * 2284)
    for split in ("train", "val", "test"):
        first, end = parts[split]
        assert min(starts[split]) >= first and max(starts[split]) + horizon <= end  # all of y in the part
        a = co2.splits[split].arrays()
        assert a["x"].shape == (len(starts[split]), window, 1) and a["y"].shape == (
            len(starts[split]),
            horizon,
        )
    series = (timeseries.co2() - co2.info["y_mean"]) / co2.info["y_std"]
    t = starts["test"][5]
    test = co2.splits["test"].arrays()
    assert np.allclose(test["x"][5, :, 0], series[t - window : t]) and np.allclose(
        test["y"][5], series[t : t + horizon]
    )


def test_co2_scaler_is_fitted_on_the_training_part_only(co2) -> None:
    values = timeseries.co2()
    first, end = co2.info["boundaries"]["train"]
    assert co2.info["y_mean"] == pytest.approx(values[first:end].mean())
    assert co2.info["y_std"] == pytest.approx(values[first:end].std())
    scaled_train = (values[first:end] - co2.info["y_mean"]) / co2.info["y_std"]
    assert abs(scaled_train.mean()) < 1e-9
    assert co2.splits["test"].arrays()["y"].mean() > 1.0  # CO2 rose: later weeks lie above the train mean


def independent_rmse(values: np.ndarray, starts: list[int], horizon: int, season: int) -> tuple[float, float]:
    """Both naive baselines, written out one forecast at a time."""
    last, seasonal = [], []
    for t in starts:
        for h in range(horizon):
            last.append(values[t + h] - values[t - 1])
            k = 1
            while t + h - k * season >= t:  # the most recent same-phase point before t
                k += 1
            seasonal.append(values[t + h] - values[t + h - k * season])
    return float(np.sqrt(np.mean(np.square(last)))), float(np.sqrt(np.mean(np.square(seasonal))))


@pytest.mark.parametrize("name", ["co2", "sunspots"])
def test_naive_baselines_match_an_independent_computation(name: str, co2) -> None:
    ds = co2 if name == "co2" else timeseries.load(**config(name))
    values = timeseries.SERIES[name]()
    last, seasonal = independent_rmse(
        values, ds.info["starts"]["test"], ds.info["horizon"], ds.info["season"]
    )
    assert ds.info["baseline_test_rmse"]["last_value"] == pytest.approx(last)
    assert ds.info["baseline_test_rmse"]["seasonal_naive"] == pytest.approx(seasonal)


def test_sunspots_split_sizes() -> None:
    ds = timeseries.load(**config("sunspots"))
    assert ds.info["boundaries"] == {"train": (0, 216), "val": (216, 247), "test": (247, 309)}
    assert [ds.splits[s].num_examples for s in ("train", "val", "test")] == [216 - 22, 31, 62]
    assert ds.input_shape == (22, 1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"window": 10, "season": 52}, "data.window=10 must be >= data.season=52"),
        ({"horizon": 0}, "data.horizon"),
        ({"test_fraction": 0.95}, "sum < 1"),
        ({"name": "nile"}, "data.name must be one of"),
    ],
)
def test_bad_forecasting_settings_are_config_errors(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        timeseries.load(**config("co2", **overrides))
