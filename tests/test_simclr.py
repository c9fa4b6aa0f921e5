"""SimCLR: NT-Xent against a numpy reference, the linear probe, the views, a step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.evaluators.linear_probe import fit_and_score
from research.models.mlp import MLP
from research.tasks.simclr import SimCLRTask, nt_xent
from tests.test_autoencoder import image_data


def nt_xent_numpy(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """The SimCLR paper's loss written out: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t)."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [np.exp(z[i] @ z[k] / t) for k in range(2 * n) if k != i]
        total += -np.log(np.exp(z[i] @ z[j] / t) / sum(others))
    return total / (2 * n)


def test_nt_xent_equals_the_papers_formula() -> None:
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    for t in (0.1, 0.5, 1.0):
        assert float(nt_xent(jnp.asarray(z1), jnp.asarray(z2), t)) == pytest.approx(
            nt_xent_numpy(z1, z2, t), rel=1e-5
        )
    assert float(nt_xent(jnp.asarray(z1), jnp.asarray(z1), 0.05)) < float(
        nt_xent(jnp.asarray(z1), jnp.asarray(z2), 0.05)
    )


def test_the_probe_separates_separable_features_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 4)) + 4.0 * np.eye(3, 4)[y]
    fit = jax.jit(functools.partial(fit_and_score, num_classes=3, steps=200, learning_rate=0.1))
    args = (jnp.asarray(x[:200]), jnp.asarray(y[:200]), jnp.asarray(x[200:]), jnp.asarray(y[200:]))
    assert float(fit(*args, jnp.ones(100))) > 0.95
    assert float(fit(*args[:2], jnp.asarray(rng.normal(size=(100, 4))), args[3], jnp.ones(100))) < 0.6
    weight = jnp.zeros(100).at[0].set(1.0)  # padding rows carry weight 0
    correct = float(fit(*args, weight))
    assert correct in (0.0, 1.0)


def test_a_step_makes_two_views_and_lowers_nothing_it_should_not() -> None:
    model = functools.partial(MLP, hidden_sizes=[16])
    task = SimCLRTask(model, lambda n: optax.adam(1e-3), 10, image_data(), feature_dim=8, projection_dim=4,
                      noise_std=0.1, probe_examples=32, probe_steps=10)  # fmt: skip
    state = task.init(jax.random.PRNGKey(0), None)
    batch = {"image": jnp.asarray(image_data().splits["train"].arrays()["image"][:8])}
    views = task.views(jax.random.PRNGKey(1), batch)
    assert views.shape == (16, 8, 8, 1) and not np.allclose(views[:8], views[8:])
    new, metrics = jax.jit(task.train_step)(state, batch)
    assert np.isfinite(float(metrics["loss"])) and int(new["step"]) == 1
    assert task.evaluators()["probe"].metric_names() == (
        "probe_accuracy", "random_encoder_probe_accuracy", "raw_pixel_probe_accuracy")  # fmt: skip


def test_the_probe_scores_against_the_labels_data_classes_renumbers() -> None:
    """data.classes=[7, 9] stores labels 7 and 9 but the task's classes are 0 and 1: the probe must
    fit and score the renumbered labels (raw ones lie outside its 2 classes and score 0)."""
    from types import SimpleNamespace

    from research.data.arrays import ArraySplit, identity_transform
    from research.data.base import Dataset
    from research.data.tfds_source import relabel

    rng = np.random.default_rng(0)
    raw = np.where(np.arange(64) % 2, 9, 7)
    images = np.where(raw[:, None, None, None] == 7, 0.6, 0.0) + 0.4 * rng.uniform(size=(64, 8, 8, 1))
    split = ArraySplit({"image": images.astype(np.float32), "label": raw})
    data = Dataset("two_of_ten", (8, 8, 1), 2, {s: split for s in ("train", "val", "test")},
                   relabel(identity_transform, [7, 9], 10), 16, 32)  # fmt: skip
    task = SimCLRTask(functools.partial(MLP, hidden_sizes=[16]), lambda n: optax.adam(1e-3), 10, data,
                      feature_dim=8, projection_dim=4, probe_examples=64, probe_steps=100)  # fmt: skip
    assert set(np.asarray(task.probe_train[1]).tolist()) == {0, 1}
    ctx = SimpleNamespace(per_replica=lambda fn, in_axes=0: fn, run=lambda p, *a: p(*a), final=True)
    batches = {"image": jnp.asarray(images.reshape(2, 32, 8, 8, 1)), "label": jnp.asarray(raw.reshape(2, 32))}
    state = task.init(jax.random.PRNGKey(0), None)
    metrics = task.evaluators()["probe"](ctx, state, (batches, jnp.ones((2, 32)))).metrics
    assert float(metrics["raw_pixel_probe_accuracy"]) > 0.95  # bright 7s, dark 9s: separable
