"""Classical baselines on the exact splits the recipes train on: what a network must match.

    JAX_PLATFORMS=cpu python bench/regression_baselines.py

diabetes: ridge regression (scikit-learn RidgeCV, alpha chosen on the val split from a log
grid) on the same standardised features and train/val/test rows as data=diabetes; prints
test R^2 and RMSE in the target's units, and the train-mean predictor. co2: the source's own
last-value and seasonal-naive test RMSE (ppm). Compare with a run's summary.json:
test/r2, test/rmse_original, test/baseline_*_rmse.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score, root_mean_squared_error

from research.data.tabular import load_diabetes
from research.data.timeseries import load as load_series

ALPHAS = np.logspace(-3, 3, 25)  # ridge penalties tried; the best on val is refitted on train


def ridge_diabetes() -> dict[str, float]:
    data = load_diabetes(test_fraction=0.2, val_fraction=0.1, split_seed=0, scale_target=True,
                         batch_size=32, eval_batch_size=512)  # fmt: skip
    parts = {s: data.splits[s].arrays() for s in ("train", "val", "test")}
    val_r2 = {
        a: r2_score(
            parts["val"]["y"],
            Ridge(alpha=a).fit(parts["train"]["x"], parts["train"]["y"]).predict(parts["val"]["x"]),
        )
        for a in ALPHAS
    }
    alpha = max(val_r2, key=val_r2.get)
    model = Ridge(alpha=alpha).fit(parts["train"]["x"], parts["train"]["y"])
    pred, y = model.predict(parts["test"]["x"]), parts["test"]["y"]
    return {
        "ridge_alpha": float(alpha),
        "ridge_test_r2": float(r2_score(y, pred)),
        "ridge_test_rmse_original": float(root_mean_squared_error(y, pred) * data.info["y_std"]),
        "train_mean_test_rmse": data.info["baseline_test_rmse"]["train_mean"],
    }


def co2_naive() -> dict[str, float]:
    data = load_series("co2", window=104, horizon=13, season=52, val_fraction=0.1, test_fraction=0.2,
                       batch_size=32, eval_batch_size=512)  # fmt: skip
    return {f"co2_{k}_test_rmse": v for k, v in data.info["baseline_test_rmse"].items()}


if __name__ == "__main__":
    for name, value in {**ridge_diabetes(), **co2_naive()}.items():
        print(f"{name:32s} {value:.4f}")
