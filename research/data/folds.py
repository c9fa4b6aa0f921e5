"""Stratified k-fold splits of a training set, for ``trainer.cv_folds`` (cross-validation).

Each class's examples are shuffled and dealt round-robin into the k validation folds,
the deal continuing from one class to the next, so every fold holds each class in
proportion (within one example) and fold sizes differ by at most one. The folds
are disjoint and together cover the training set; fold i trains on the rest.

All folds train as one vmapped program (the replica axis is the fold), which needs
equal shapes: ``stacked`` pads each fold's index lists to the longest one, training
indices by repeating the fold's own first examples (one extra example per epoch at
most), validation indices with weight 0 (like the engine's eval padding).
"""

from __future__ import annotations

import numpy as np

from research.errors import ConfigError


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(train indices, val indices)] for each of ``k`` folds over positions 0..len(labels)-1, sorted."""
    labels = np.asarray(labels)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"trainer.cv_folds must be an integer >= 2 (or null), got {k!r}")
    values, counts = np.unique(labels, return_counts=True)
    if counts.min() < k:
        raise ConfigError(
            f"trainer.cv_folds={k} exceeds the {counts.min()} training examples of label "
            f"{values[counts.argmin()]}: every fold must see every class"
        )
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), np.int64)
    offset = 0
    for value in values:
        members = rng.permutation(np.flatnonzero(labels == value))
        fold_of[members] = (offset + np.arange(len(members))) % k
        offset += len(members)
    positions = np.arange(len(labels))
    return [(positions[fold_of != i], positions[fold_of == i]) for i in range(k)]


def stacked(folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """{"train": (k, T) indices, "val": (k, V) indices, "val_weight": (k, V) 1 real / 0 padding}."""
    longest_train = max(len(t) for t, _ in folds)
    longest_val = max(len(v) for _, v in folds)

    def pad(indices: np.ndarray, size: int) -> np.ndarray:
        return np.concatenate([indices, indices[: size - len(indices)]])

    weight = [np.pad(np.ones(len(v), np.float32), (0, longest_val - len(v))) for _, v in folds]
    return {
        "train": np.stack([pad(t, longest_train) for t, _ in folds]),
        "val": np.stack([pad(v, longest_val) for _, v in folds]),
        "val_weight": np.stack(weight),
    }


# The field folds are stratified by, when a split has it as integer class labels.
STRATIFY_KEY = "label"


def stratify_labels(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """What ``stratified_folds`` deals by: the class labels, or one class (a plain shuffled k-fold)
    for data without them (regression targets, unlabelled images).
    """
    labels = arrays.get(STRATIFY_KEY)
    if labels is not None and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        return labels
    return np.zeros(len(next(iter(arrays.values()))), np.int64)
