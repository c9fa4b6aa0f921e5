"""The regression task: exact metrics (scikit-learn's), forecasting baselines, bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from research.data.arrays import make_dataset
from research.errors import ConfigError
from research.models.mlp import MLP
from research.tasks.regression import RegressionTask, regression_metrics, regression_sums
from tests.conftest import TINY, run_train


def sums_in_batches(pred: np.ndarray, y: np.ndarray, batch: int) -> dict:
    """Batch sums as the Sums evaluator adds them, the last batch padded with weight 0."""
    pad = -len(y) % batch
    pred = np.concatenate([pred, np.full((pad, pred.shape[1]), 7.0)])
    y = np.concatenate([y, np.full((pad, y.shape[1]), -3.0)])
    weight = np.concatenate([np.ones(len(y) - pad), np.zeros(pad)]).astype(np.float32)
    parts = [
        regression_sums(*(jnp.asarray(a[i : i + batch]) for a in (pred, y, weight)))
        for i in range(0, len(y), batch)
    ]
    return jax.tree.map(lambda *xs: sum(xs), *parts)


@pytest.mark.parametrize("outputs", [1, 13])
def test_metrics_equal_scikit_learn_on_the_same_predictions(outputs: int) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(101, outputs)).astype(np.float32) * np.arange(1, outputs + 1)
    pred = (y + rng.normal(size=y.shape) * 0.5).astype(np.float32)
    metrics = regression_metrics(sums_in_batches(pred, y, 16), y_std=2.5)
    np.testing.assert_allclose(metrics["mse"], mean_squared_error(y, pred), rtol=1e-5)
    np.testing.assert_allclose(metrics["rmse"], np.sqrt(mean_squared_error(y, pred)), rtol=1e-5)
    np.testing.assert_allclose(metrics["mae"], mean_absolute_error(y, pred), rtol=1e-5)
    np.testing.assert_allclose(metrics["r2"], r2_score(y, pred), rtol=1e-4)
    np.testing.assert_allclose(
        metrics["rmse_original"], 2.5 * np.sqrt(mean_squared_error(y, pred)), rtol=1e-5
    )


def sequence_data(window: int = 6, horizon: int = 2) -> object:
    x = np.linspace(0, 1, 40 * window, dtype=np.float32).reshape(40, window, 1)
    y = np.repeat(x[:, -1:, 0], horizon, axis=1)
    parts = {s: {"x": x, "y": y} for s in ("train", "val", "test")}
    return make_dataset("seq", parts, 8, 16, input_shape=(window, 1), info={"y_std": 1.0})


def Zero(input_shape, num_outputs, *, rngs):  # noqa: N802 (a model class stand-in)
    """A linear model that predicts 0 whatever it reads: relative_to_last makes it the last-value forecast."""
    model = MLP(input_shape, num_outputs, [], "relu", 0.0, rngs=rngs)
    model.head.kernel.value = jnp.zeros_like(model.head.kernel.value)
    return model


def test_relative_to_last_predicts_the_change_from_the_last_value() -> None:
    import optax

    task = RegressionTask(Zero, lambda n: optax.sgd(0.0), 10, sequence_data(), relative_to_last=True)
    state = task.init(jax.random.PRNGKey(0), None)
    batch = {k: jnp.asarray(v[:8]) for k, v in task.dataset.splits["test"].arrays().items()}
    pred, y = task.predict(task.eval_model(state), batch)
    np.testing.assert_allclose(pred, y, atol=1e-6)  # y is the last value, repeated over the horizon


def test_relative_to_last_needs_sequences() -> None:
    import optax

    rows = {
        s: {"x": np.zeros((20, 3), np.float32), "y": np.zeros((20, 1), np.float32)}
        for s in ("train", "val", "test")
    }
    data = make_dataset("rows", rows, 4, 4, input_shape=(3,))
    with pytest.raises(ConfigError, match="task.relative_to_last needs sequence inputs"):
        RegressionTask(MLP, lambda n: optax.sgd(0.1), 10, data, relative_to_last=True)


def test_a_forecast_records_the_naive_baselines_beside_its_rmse(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train("task=regression", "data=sunspots", "model=rnn_regressor", "model.hidden_size=8", "+debug=fast",
              "name=sunspots_tiny", *TINY, f"hydra.run.dir={run_dir}")  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    from research.data.timeseries import load

    info = load("sunspots", 22, 1, 11, 0.1, 0.2, 16, 128).info
    for kind, value in info["baseline_test_rmse"].items():
        assert summary[f"test/baseline_{kind}_rmse"] == pytest.approx(value, rel=1e-4)
    assert summary["test/rmse_original"] == pytest.approx(summary["test/rmse"] * info["y_std"], rel=1e-3)
    assert "val/baseline_last_value_rmse" not in summary  # a test-set constant, recorded once


def test_regression_on_a_classification_dataset_is_one_line(tmp_path: Path) -> None:
    proc = run_train(
        "task=regression", "data=digits", *TINY, f"hydra.run.dir={tmp_path / 'run'}", check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: task=regression needs float targets y; data=digits has classes or no input: "
        "use task=classification or another data="
    ]
