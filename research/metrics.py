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


def iou_per_class(confusion: jax.Array) -> jax.Array:
    """Per-class intersection over union of a (true, predicted) count matrix: TP / (TP + FP + FN);
    0 for a class neither present nor predicted (``mean_iou`` leaves those out)."""
    hits = jnp.diag(confusion)
    return safe_divide(hits, confusion.sum(axis=0) + confusion.sum(axis=1) - hits)


def mean_iou(confusion: jax.Array) -> jax.Array:
    """The mean of ``iou_per_class`` over the classes present or predicted (the usual mIoU)."""
    seen = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    return safe_divide(jnp.sum(iou_per_class(confusion) * seen), seen.sum())


def psnr(images: jax.Array, references: jax.Array, max_value: float = 1.0) -> jax.Array:
    """Per-image peak signal-to-noise ratio in dB, ``10 log10(max^2 / MSE)``, over (B, ...) batches."""
    mse = jnp.square(images - references).reshape(images.shape[0], -1).mean(-1)
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-12))


def gaussian_window(size: int, sigma: float) -> jax.Array:
    """The normalised 1-D Gaussian of ``size`` taps (SSIM's window is its outer product)."""
    offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    return weights / weights.sum()


def _local_mean(x: jax.Array, window: jax.Array) -> jax.Array:
    """Gaussian-weighted means of every ``len(window)``-square patch (VALID) of (B, H, W, C) images."""
    size = window.shape[0]
    rows = jnp.stack(
        [jnp.zeros(x.shape[1]).at[i : i + size].set(window) for i in range(x.shape[1] - size + 1)]
    )
    cols = jnp.stack(
        [jnp.zeros(x.shape[2]).at[i : i + size].set(window) for i in range(x.shape[2] - size + 1)]
    )
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)


def ssim(
    images: jax.Array,
    references: jax.Array,
    max_value: float = 1.0,
    window: int = 7,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """Per-image structural similarity (Wang et al. 2004) of (B, H, W, C) batches: the mean over
    Gaussian windows and channels of ``(2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 +
    s_y^2 + C2))``, ``C_i = (k_i max_value)^2``. The paper's window is 11 taps; 7 suits 28x28 images."""
    w = gaussian_window(window, sigma)
    mu_x, mu_y = _local_mean(images, w), _local_mean(references, w)
    var_x = _local_mean(images * images, w) - mu_x**2
    var_y = _local_mean(references * references, w) - mu_y**2
    cov = _local_mean(images * references, w) - mu_x * mu_y
    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.reshape(index.shape[0], -1).mean(-1)
