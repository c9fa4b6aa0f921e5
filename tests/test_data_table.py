"""A user's own table (CSV, Parquet) as data=table, and the carving of splits it shares with
other own-data sources."""

from __future__ import annotations

import numpy as np
import pytest

from research.data.arrays import random_split
from research.data.splits import carve
from research.errors import ConfigError


def test_carving_is_stratified_seeded_disjoint_and_unstratified_as_random_split() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    parts = carve(100, test_fraction=0.2, val_fraction=0.1, seed=1, labels=labels)
    assert [np.bincount(labels[parts["test"]]).tolist(), len(parts["val"])] == [[10, 6, 4], 8]
    assert np.abs(np.bincount(labels[parts["val"]]) - np.array([4.0, 2.4, 1.6])).max() < 1
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    again = carve(100, test_fraction=0.2, val_fraction=0.1, seed=1, labels=labels)
    assert all(np.array_equal(parts[s], again[s]) for s in parts)
    moved = carve(100, test_fraction=0.2, val_fraction=0.1, seed=2, labels=labels)
    assert not np.array_equal(parts["test"], moved["test"])
    plain = carve(442, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert all(np.array_equal(plain[s], v) for s, v in random_split(442, 0.2, 0.1, 0).items())
    own_test = carve(100, test_fraction=0.0, val_fraction=0.1, seed=0, labels=labels)
    assert [len(own_test[s]) for s in ("train", "val", "test")] == [90, 10, 0]


@pytest.mark.parametrize(
    ("test_fraction", "val_fraction", "message"),
    [
        (1.0, 0.1, r"data.test_fraction must be in \[0, 1\), got 1.0"),
        (0.001, 0.1, "data.test_fraction=0.001 of 100 examples leaves the test split empty"),
        (0.5, 0.99, "leave no training examples of 100"),
    ],
)
def test_carving_fractions_that_leave_a_split_empty_are_one_line(
    test_fraction: float, val_fraction: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        carve(100, test_fraction=test_fraction, val_fraction=val_fraction, seed=0)
