"""Stratified k-fold splits: disjoint, covering, stratified, reproducible, and padded to one shape."""

from __future__ import annotations

import numpy as np
import pytest

from research.data.folds import stacked, stratified_folds
from research.errors import ConfigError

# Imbalanced classes of sizes 50, 23 and 7, in a shuffled order.
LABELS = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [50, 23, 7]))


@pytest.mark.parametrize("k", [2, 5, 7])
def test_validation_folds_are_disjoint_and_cover_the_training_data(k: int) -> None:
    folds = stratified_folds(LABELS, k, seed=3)
    vals = np.concatenate([v for _, v in folds])
    assert len(vals) == len(LABELS) and set(vals) == set(range(len(LABELS)))  # disjoint and covering
    for train, val in folds:
        assert not set(train) & set(val) and len(train) + len(val) == len(LABELS)
    sizes = [len(v) for _, v in folds]
    assert max(sizes) - min(sizes) <= 1


def test_every_fold_holds_each_class_in_proportion() -> None:
    for _, val in stratified_folds(LABELS, 5, seed=0):
        counts = np.bincount(LABELS[val], minlength=3)
        assert np.all(np.abs(counts - np.array([50, 23, 7]) / 5) < 1)


def test_the_seed_decides_the_folds() -> None:
    a, b, c = (stratified_folds(LABELS, 4, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


def test_stacked_pads_to_one_shape_with_zero_weight_on_padding() -> None:
    folds = stratified_folds(LABELS, 3, seed=0)
    out = stacked(folds)
    assert out["train"].shape[0] == out["val"].shape[0] == 3 and out["val"].shape == out["val_weight"].shape
    for i, (train, val) in enumerate(folds):
        assert set(out["train"][i]) == set(train)
        assert list(out["val"][i][out["val_weight"][i] > 0]) == list(val)


def test_too_many_folds_for_the_rarest_class_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"trainer.cv_folds=8 exceeds the 7 training examples of label 2"):
        stratified_folds(LABELS, 8, seed=0)
    with pytest.raises(ConfigError, match="trainer.cv_folds must be an integer >= 2"):
        stratified_folds(LABELS, 1, seed=0)
