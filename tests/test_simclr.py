"""SimCLR: NT-Xent against a numpy reference, the linear probe, the views, a step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.evaluators.linear_probe import featurize_in_chunks, fit_and_score
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
    fit = jax.jit(functools.partial(fit_and_score, num_classes=3, steps=50, l2=1e-3))
    args = (jnp.asarray(x[:200]), jnp.asarray(y[:200]), jnp.asarray(x[200:]), jnp.asarray(y[200:]))
    assert float(fit(*args, jnp.ones(100))) > 0.95
    assert float(fit(*args[:2], jnp.asarray(rng.normal(size=(100, 4))), args[3], jnp.ones(100))) < 0.6
    weight = jnp.zeros(100).at[0].set(1.0)  # padding rows carry weight 0
    correct = float(fit(*args, weight))
    assert correct in (0.0, 1.0)


def test_the_probe_is_logistic_regression_fitted_to_convergence() -> None:
    """On overlapping classes the probe predicts as scikit-learn's L-BFGS logistic regression with
    the same L2 penalty (sklearn's C * sum of losses + |W|^2 / 2 is l2 = 1 / (C N) on the mean)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 1400)
    x = rng.normal(size=(1400, 20)) + 0.7 * np.eye(4, 20)[y]
    train, test = slice(0, 1000), slice(1000, None)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    reference = LogisticRegression(C=1.0, max_iter=1000).fit((x[train] - mean) / std, y[train])
    expected = reference.score((x[test] - mean) / std, y[test])
    fit = jax.jit(functools.partial(fit_and_score, num_classes=4, steps=100, l2=1.0 / 1000))
    args = (jnp.asarray(x[train]), jnp.asarray(y[train]), jnp.asarray(x[test]), jnp.asarray(y[test]))
    accuracy = float(fit(*args, jnp.ones(400)))
    assert 0.4 < expected < 0.9 and accuracy == pytest.approx(expected, abs=0.006)  # <= 2 of 400 differ


def test_features_in_chunks_equal_features_at_once() -> None:
    images = jnp.asarray(np.random.default_rng(0).normal(size=(10, 3, 3, 1)), jnp.float32)
    featurize = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.ones((9, 2)))  # noqa: E731
    np.testing.assert_allclose(featurize_in_chunks(featurize, images, 4), featurize(images), rtol=1e-6)


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


def test_penultimate_probe_features_are_what_the_encoders_last_layer_reads() -> None:
    from research.errors import ConfigError
    from research.models.cnn import CNN

    cnn = functools.partial(CNN, channels=[4], dense_sizes=[])
    task = SimCLRTask(cnn, lambda n: optax.adam(1e-3), 10, image_data(), feature_dim=8, projection_dim=4,
                      probe_examples=32, probe_steps=10, probe_features="penultimate")  # fmt: skip
    state = task.init(jax.random.PRNGKey(0), None)
    raw = jnp.asarray(image_data().splits["train"].arrays()["image"][:5])
    assert task.features(state, raw).shape == (5, 4 * 4 * 4)  # 4 channels on the pooled 4x4 grid
    with pytest.raises(ConfigError, match="task.probe_features=penultimate: model MLP"):
        SimCLRTask(functools.partial(MLP, hidden_sizes=[16]), lambda n: optax.adam(1e-3), 10, image_data(),
                   feature_dim=8, projection_dim=4, probe_features="penultimate")  # fmt: skip
    with pytest.raises(ConfigError, match="task.probe_features='hidden': choose output or penultimate"):
        SimCLRTask(cnn, lambda n: optax.adam(1e-3), 10, image_data(), probe_features="hidden")
