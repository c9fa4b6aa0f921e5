"""Tabular regression: scikit-learn's bundled ``load_diabetes`` (442 patients, 10 features).

The raw features (``scaled=False``: scikit-learn's default scaling uses all 442 rows,
the test rows included) are standardised with the mean and std of the training rows
only, and so is the target when ``scale_target``; ``info`` keeps both scalers, so a
task reports errors in the target's own units (``y * y_std + y_mean``). Train, val and
test rows are a fixed random split by ``split_seed``: ``test_fraction`` of all rows,
then ``val_fraction`` of the rest.
"""

from __future__ import annotations

import numpy as np

from research.data.arrays import SPLITS, make_dataset, random_split
from research.data.base import Dataset


def standardize(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per column of the training rows; a constant column gets std 1."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def load_diabetes(
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
    scale_target: bool,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """``x`` (10,) float32 standardised features, ``y`` (1,) float32 disease progression."""
    from sklearn.datasets import load_diabetes as sklearn_diabetes  # ~1 s import, paid here only

    bunch = sklearn_diabetes(scaled=False)
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.float64)[:, None]
    rows = random_split(len(x), test_fraction, val_fraction, split_seed)
    x_mean, x_std = standardize(x[rows["train"]])
    y_mean, y_std = standardize(y[rows["train"]]) if scale_target else (np.zeros(1), np.ones(1))
    splits = {
        s: {
            "x": ((x[rows[s]] - x_mean) / x_std).astype(np.float32),
            "y": ((y[rows[s]] - y_mean) / y_std).astype(np.float32),
        }
        for s in SPLITS
    }
    # Predicting the training mean: the error any model should beat, in the target's units.
    mean_rmse = float(np.sqrt(np.mean((y[rows["test"]] - y[rows["train"]].mean()) ** 2)))
    info = {
        "feature_names": list(bunch.feature_names),
        "x_mean": x_mean.tolist(),
        "x_std": x_std.tolist(),
        "y_mean": float(y_mean[0]),
        "y_std": float(y_std[0]),
        "rows": {s: rows[s].tolist() for s in SPLITS},  # indices into load_diabetes()
        "baseline_test_rmse": {"train_mean": mean_rmse},
    }
    return make_dataset(
        "diabetes",
        splits,
        batch_size,
        eval_batch_size,
        input_shape=(x.shape[1],),
        info=info,
        empty_hint="change data.test_fraction or data.val_fraction",
    )
