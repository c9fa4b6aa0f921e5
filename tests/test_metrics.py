"""Summed metrics match scikit-learn, padding rows count nowhere, and empty classes give no NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from research.metrics import classification_metrics, classification_sums, safe_divide

C = 6


def random_batch(rng: np.random.Generator, n: int, pad: int):
    """Logits and labels where class 4 is never predicted and class 5 never occurs, plus padding rows."""
    labels = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, C)).astype(np.float32)
    logits[:, 4] = -10.0
    logits[np.arange(n), labels] += rng.uniform(0, 2, n)  # better than chance
    losses = rng.uniform(0, 3, n).astype(np.float32)
    pad_labels = rng.integers(0, C, pad)  # garbage the mask must hide
    pad_logits = rng.normal(size=(pad, C)).astype(np.float32) * 10
    return (
        np.concatenate([logits, pad_logits]),
        np.concatenate([labels, pad_labels]).astype(np.int32),
        np.concatenate([losses, rng.uniform(100, 200, pad).astype(np.float32)]),
        np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]),
    )


def test_metrics_summed_over_masked_batches_match_sklearn():
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, 150, 42), random_batch(rng, 90, 102)]
    sums_fn = jax.jit(lambda lo, la, ls, m: classification_sums(lo, la, ls, m, top_k=(3,)))
    sums = [sums_fn(*b) for b in batches]
    total = jax.tree.map(jnp.add, *sums)
    metrics = jax.jit(classification_metrics)(total)

    logits, labels, losses, _ = (np.concatenate([b[i][b[3] == 1] for b in batches]) for i in range(4))
    preds = logits.argmax(-1)
    classes = range(C)
    p, r, f, _ = precision_recall_fscore_support(
        labels, preds, labels=classes, average="macro", zero_division=0
    )

    assert float(total["count"]) == len(labels) == 240
    expected_confusion = confusion_matrix(labels, preds, labels=classes)
    np.testing.assert_array_equal(metrics["confusion_matrix"], expected_confusion)
    assert float(metrics["accuracy"]) == pytest.approx(accuracy_score(labels, preds), rel=1e-6)
    assert float(metrics["precision"]) == pytest.approx(p, rel=1e-5)
    assert float(metrics["recall"]) == pytest.approx(r, rel=1e-5)
    assert float(metrics["f1"]) == pytest.approx(f, rel=1e-5)
    assert float(metrics["loss"]) == pytest.approx(losses.mean(), rel=1e-5)
    top3 = top_k_accuracy_score(labels, logits, k=3, labels=classes)
    assert float(metrics["top3_accuracy"]) == pytest.approx(top3, rel=1e-6)
    assert all(np.all(np.isfinite(v)) for v in metrics.values())


def test_empty_sums_give_zeros_not_nan():
    sums = {"loss_sum": jnp.zeros(()), "count": jnp.zeros(()), "confusion": jnp.zeros((C, C))}
    metrics = classification_metrics(sums)
    for key in ("loss", "accuracy", "precision", "recall", "f1"):
        assert float(metrics[key]) == 0.0
    grad = jax.grad(lambda x: safe_divide(x, jnp.zeros(())))(1.0)
    assert float(grad) == 0.0
