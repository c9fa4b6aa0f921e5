"""Jittable classification metrics, accumulated as sums.

An eval step turns each batch into sums (``classification_sums``); the engine adds
the sums of all batches on device; ``classification_metrics`` turns the totals into
rates once. Padding rows carry weight 0 in ``mask`` and count nowhere. Conventions
match scikit-learn's ``precision_recall_fscore_support(average="macro",
labels=range(C), zero_division=0)``: a class with no predictions (or no examples)
scores 0 precision (recall) instead of NaN, and every class counts in the average.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Sums = dict[str, jax.Array]


def confusion_matrix(
    labels: jax.Array, predictions: jax.Array, num_classes: int, weights: jax.Array
) -> jax.Array:
    """(C, C) float32: entry [i, j] sums the weights of examples of class i predicted as j."""
    matrix = jnp.zeros((num_classes, num_classes), jnp.float32)
    return matrix.at[labels, predictions].add(weights.astype(jnp.float32))


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """Per example: 1.0 where the label is among the ``k`` highest logits."""
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def classification_sums(
    logits: jax.Array, labels: jax.Array, losses: jax.Array, mask: jax.Array, top_k: Sequence[int] = ()
) -> Sums:
    """Mask-weighted sums of one batch: ``loss_sum``, ``count``, ``confusion`` and ``top{k}_correct``."""
    mask = mask.astype(jnp.float32)
    sums = {
        "loss_sum": jnp.sum(losses * mask),
        "count": jnp.sum(mask),
        "confusion": confusion_matrix(labels, jnp.argmax(logits, -1), logits.shape[-1], mask),
    }
    for k in top_k:
        sums[f"top{k}_correct"] = jnp.sum(top_k_correct(logits, labels, k) * mask)
    return sums


def classification_metrics(sums: Sums) -> dict[str, jax.Array]:
    """Loss, accuracy, macro precision/recall/F1, top-k accuracies and the confusion matrix."""
    confusion = sums["confusion"]
    count = sums["count"]
    true_positives = jnp.diag(confusion)
    precision = safe_divide(true_positives, confusion.sum(axis=0))  # over predictions of each class
    recall = safe_divide(true_positives, confusion.sum(axis=1))  # over examples of each class
    f1 = safe_divide(2 * precision * recall, precision + recall)
    metrics = {
        "loss": safe_divide(sums["loss_sum"], count),
        "accuracy": safe_divide(true_positives.sum(), count),
        "precision": precision.mean(),
        "recall": recall.mean(),
        "f1": f1.mean(),
        "confusion_matrix": confusion,
    }
    for key, value in sums.items():
        if key.startswith("top") and key.endswith("_correct"):
            metrics[key.removesuffix("_correct") + "_accuracy"] = safe_divide(value, count)
    return metrics


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """``numerator / denominator``, and 0 where the denominator is 0 (no NaN, no NaN gradient)."""
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0.0)
