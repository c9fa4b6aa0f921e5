"""Autoencoders: reconstruction error by hand, the one-class mask, ROC AUC, and a CLI run."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.data.arrays import ArraySplit, identity_transform
from research.data.base import Dataset
from research.errors import ConfigError
from research.models.autoencoder import conv_autoencoder, dense_autoencoder
from research.tasks.autoencoder import AutoencoderTask, pixel_losses, roc_auc
from tests.conftest import TINY, run_train


def image_data(n: int = 64, shape: tuple = (8, 8, 1), seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    arrays = {"image": rng.uniform(size=(n, *shape)).astype(np.float32), "label": np.arange(n) % 2}
    splits = {s: ArraySplit(arrays) for s in ("train", "val", "test")}
    return Dataset("toy", shape, 2, splits, identity_transform, 16, 32)


def make_task(**kwargs) -> AutoencoderTask:
    model = functools.partial(dense_autoencoder, latent_dim=4, hidden_sizes=[16])
    return AutoencoderTask(model, lambda n: optax.adam(1e-2), 10, image_data(), grid_images=4, **kwargs)


def test_pixel_losses_are_the_mean_over_pixels() -> None:
    logits = jnp.array([[[0.0, 2.0]], [[-1.0, 1.0]]])  # two 1x2 "images"
    target = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    sig = 1 / (1 + np.exp(-np.asarray(logits)))
    np.testing.assert_allclose(
        pixel_losses(logits, target, "mse"), ((sig - target) ** 2).mean((1, 2)), rtol=1e-6
    )
    bce = -(target * np.log(sig) + (1 - target) * np.log(1 - sig))
    np.testing.assert_allclose(pixel_losses(logits, target, "bce"), bce.mean((1, 2)), rtol=1e-5)


def test_roc_auc_is_the_probability_an_anomaly_scores_higher() -> None:
    rng = np.random.default_rng(0)
    scores, anomalous = rng.normal(size=200), rng.uniform(size=200) < 0.3
    scores[anomalous] += 1.0
    pairs = scores[anomalous][:, None] - scores[~anomalous][None, :]  # Mann-Whitney U / (n+ n-)
    assert roc_auc(scores, anomalous) == pytest.approx(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0))
    assert np.isnan(roc_auc(scores, np.ones(200, bool)))


def test_one_class_training_ignores_the_other_classes() -> None:
    task = make_task(normal_class=1)
    state, step = task.init(jax.random.PRNGKey(0), None), jax.jit(task.train_step)
    only_anomalies = {"image": jnp.ones((4, 8, 8, 1)) * 0.5, "label": jnp.zeros(4, jnp.int32)}
    new, metrics = step(state, only_anomalies)
    assert float(metrics["loss"]) == 0.0
    jax.tree.map(np.testing.assert_array_equal, new["params"], state["params"])
    mixed = {**only_anomalies, "label": jnp.array([0, 1, 0, 1])}
    _, metrics = step(state, mixed)
    assert float(metrics["loss"]) > 0.0
    assert task.metric == "val/roc_auc" and "anomaly" in task.evaluators()


def test_denoising_feeds_noise_in_and_scores_the_clean_image() -> None:
    clean, noisy = make_task(), make_task(noise="gaussian", noise_amount=0.5)
    state = clean.init(jax.random.PRNGKey(0), None)
    batch = {"image": jnp.full((4, 8, 8, 1), 0.5), "label": jnp.zeros(4, jnp.int32)}
    loss = [float(jax.jit(t.train_step)(state, batch)[1]["loss"]) for t in (clean, noisy)]
    assert loss[0] != loss[1]
    np.testing.assert_array_equal(*(jax.jit(t.scores)(state, batch) for t in (clean, noisy)))


def test_conv_autoencoder_round_trips_shapes_and_checks_them() -> None:
    from flax import nnx

    def shapes(shape: tuple, **kwargs) -> tuple:
        def run() -> tuple:
            model = conv_autoencoder(shape, latent_dim=5, channels=[4, 8], rngs=nnx.Rngs(0), **kwargs)
            code = model.encode(jnp.zeros((2, *shape)))
            return code, model.decode(code[:, :5])

        return tuple(a.shape for a in jax.eval_shape(run))  # shapes only: nothing is computed

    for shape in ((8, 8, 1), (28, 28, 1), (32, 32, 3)):
        assert shapes(shape) == ((2, 5), (2, *shape))
    assert shapes((8, 8, 1), gaussian=True)[0] == (2, 10)
    with pytest.raises(ConfigError, match="divisible by 8"):
        conv_autoencoder((28, 28, 1), latent_dim=5, channels=[4, 8, 16], rngs=nnx.Rngs(0))


def test_digits_anomaly_run_reports_roc_auc_and_draws_reconstructions(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(
        "+experiment=digits_autoencoder",
        "task.normal_class=0",
        "trainer.max_steps=60",
        "trainer.eval_every=30",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_step"] in (30, 60) and 0.5 < summary["test/roc_auc"] <= 1.0
    assert (run_dir / "plots" / "reconstructions.png").stat().st_size > 0
