"""Supervised regression and forecasting: float inputs ``x`` -> float targets ``y`` (B, H).

One task serves tabular rows (diabetes: ``x`` (10,), ``y`` (1,)) and forecasting windows
(co2: ``x`` (window, 1), ``y`` (horizon,)): a forecast is a regression onto the horizon.
Metrics are exact sums over a split, in the data's (standardised) units: ``mse``, ``rmse``,
``mae`` and ``r2`` (scikit-learn's ``r2_score``: per output column, then averaged), plus
``rmse_original`` = rmse x ``info["y_std"]`` in the target's own units when the data was
scaled. ``relative_to_last`` (forecasting): the model sees the window minus its last value and
predicts the horizon minus it, so a trending series (co2 rises past its training range) never
asks the network for values it has not seen. A source's ``info["baseline_test_rmse"]`` (last
value, seasonal naive, train mean; already in original units) is recorded beside them as
``test/baseline_<name>_rmse``, so a summary says whether the model beat them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research import precision as precision_lib
from research.data.base import EVAL_WEIGHT, Dataset
from research.engine.api import Evaluator, Schedule
from research.errors import ConfigError
from research.evaluators.state_function import StateFunction
from research.evaluators.sums import Sums
from research.tasks.base import Batch, Metrics, State, require_fields
from research.tasks.supervised import SupervisedTask, train_arrays

LOSSES = ("mse", "mae", "huber")


def pointwise_loss(kind: str, pred: jax.Array, y: jax.Array, huber_delta: float) -> jax.Array:
    """Per-element loss, same shape as ``y``."""
    if kind == "mse":
        return (pred - y) ** 2
    if kind == "mae":
        return jnp.abs(pred - y)
    return optax.huber_loss(pred, y, delta=huber_delta)


def regression_sums(pred: jax.Array, y: jax.Array, weight: jax.Array) -> Metrics:
    """Per-output (H,) sums of a batch, padding (weight 0) left out: enough for exact metrics."""
    w = weight[:, None]
    err = pred - y
    return {
        "n": jnp.sum(weight),
        "sum_y": jnp.sum(w * y, 0),
        "sum_y2": jnp.sum(w * y**2, 0),
        "sse": jnp.sum(w * err**2, 0),
        "sae": jnp.sum(w * jnp.abs(err), 0),
    }


def regression_metrics(sums: Metrics, y_std: float | None) -> Metrics:
    """mse, rmse, mae (pooled over outputs), r2 (mean over outputs of 1 - SSE / SS_tot)."""
    n = sums["n"]
    mse = jnp.mean(sums["sse"]) / n
    total = sums["sum_y2"] - sums["sum_y"] ** 2 / n  # sum of (y - mean y)^2 per output
    out = {
        "mse": mse,
        "rmse": jnp.sqrt(mse),
        "mae": jnp.mean(sums["sae"]) / n,
        "r2": jnp.mean(1.0 - sums["sse"] / jnp.maximum(total, 1e-12)),
    }
    if y_std is not None:
        out["rmse_original"] = out["rmse"] * y_std
    return out


class RegressionTask(SupervisedTask):
    """Trains ``model(input_shape=..., num_outputs=H, rngs=...)`` on ``loss`` of ``x`` -> ``y``."""

    metric, metric_mode = "val/mse", "min"
    fields = ("x", "y")

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        loss: str = "mse",
        huber_delta: float = 1.0,
        relative_to_last: bool = False,
        precision: precision_lib.Policy | None = None,
    ):
        arrays = train_arrays(dataset, "regression")
        if dataset.num_classes is not None or dataset.input_shape is None:
            raise ConfigError(
                f"task=regression needs float targets y; data={dataset.name} has classes or no input: "
                "use task=classification or another data="
            )
        require_fields(self.fields, "regression", dataset, "choose a regression or forecasting data=")
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r} must be one of {', '.join(LOSSES)}")
        if huber_delta <= 0:
            raise ConfigError(f"task.huber_delta={huber_delta} must be positive")
        if relative_to_last and len(dataset.input_shape) != 2:
            raise ConfigError(
                f"task.relative_to_last needs sequence inputs x (window, features); data={dataset.name} "
                f"gives {tuple(dataset.input_shape)}"
            )
        self.loss_kind, self.huber_delta = loss, float(huber_delta)
        self.relative_to_last = bool(relative_to_last)
        self.y_dim = math.prod(arrays["y"].shape[1:]) if arrays else 1
        self.y_std = dataset.info.get("y_std")
        self.baselines = dict(dataset.info.get("baseline_test_rmse") or {})
        kwargs = {"input_shape": tuple(dataset.input_shape), "num_outputs": self.y_dim}
        super().__init__(model, make_optimizer, total_steps, dataset, kwargs, precision)

    def predict(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, jax.Array]:
        """(predictions, targets), both (B, H) in the output dtype."""
        x = batch["x"]
        offset = (
            x[:, -1:, :1] if self.relative_to_last else jnp.zeros((), x.dtype)
        )  # (B, 1, 1): the last value
        pred = self.precision.cast_output(model(x - offset))
        pred = pred.reshape(pred.shape[0], -1) + offset.reshape(-1, 1).astype(pred.dtype)
        return pred, batch["y"].reshape(pred.shape[0], -1).astype(pred.dtype)

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        pred, y = self.predict(model, batch)
        loss = pointwise_loss(self.loss_kind, pred, y, self.huber_delta).mean()
        return loss, {"mse": jnp.mean((pred - y) ** 2)}

    def eval_step(self, state: State, batch: Batch) -> Metrics:
        batch = self.dataset.transform(state["rng"], batch, False)
        pred, y = self.predict(self.eval_model(state), batch)
        return regression_sums(pred, y, batch[EVAL_WEIGHT])

    def finalize(self, sums: Metrics) -> Metrics:
        return regression_metrics(sums, self.y_std)

    def metric_names(self) -> tuple[str, ...]:
        return ("mse", "rmse", "mae", "r2") + (("rmse_original",) if self.y_std is not None else ())

    def evaluators(self) -> dict[str, Evaluator]:
        out: dict[str, Evaluator] = {"metrics": Sums(self.eval_step, self.finalize, self.metric_names())}
        if self.baselines:  # constants of the data, recorded once, next to test/rmse_original
            constants = {f"baseline_{k}_rmse": float(v) for k, v in self.baselines.items()}
            out["baselines"] = StateFunction(
                lambda state: {k: jnp.float32(v) for k, v in constants.items()},
                tuple(constants),
                Schedule(every=0, final=True, prefix="test"),
            )
        return out
