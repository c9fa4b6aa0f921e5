"""VAE: the ELBO's terms against hand computations, the reparameterised gradient, the grids."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.models.autoencoder import dense_autoencoder
from research.tasks.vae import VAETask, gaussian_kl, reconstruction_nll
from tests.test_autoencoder import image_data


def test_bernoulli_reconstruction_is_the_summed_binary_cross_entropy() -> None:
    logits = jnp.array([[[[0.0], [math.log(3.0)]]]])  # one 1x2 image: p = 1/2 and 3/4
    x = jnp.array([[[[1.0], [0.0]]]])
    assert float(reconstruction_nll(logits, x, "bernoulli", 1.0)[0]) == pytest.approx(
        math.log(2) + math.log(4)
    )


def test_gaussian_reconstruction_is_the_summed_negative_log_density() -> None:
    logits, x, sigma = jnp.zeros((1, 1, 2, 1)), jnp.array([[[[0.5], [0.7]]]]), 0.1  # mean 0.5 everywhere
    by_hand = sum(
        0.5 * ((v - 0.5) / sigma) ** 2 + math.log(sigma) + 0.5 * math.log(2 * math.pi) for v in (0.5, 0.7)
    )
    assert float(reconstruction_nll(logits, x, "gaussian", sigma)[0]) == pytest.approx(by_hand, rel=1e-5)


def test_kl_to_the_standard_normal_by_hand() -> None:
    mean, logvar = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, math.log(4.0)]])
    by_hand = 0.5 * (1.0 + 0.0) + 0.5 * (
        4.0 - 1.0 - math.log(4.0)
    )  # per dimension: (mu^2 + s^2 - 1 - log s^2) / 2
    assert float(gaussian_kl(mean, logvar)[0]) == pytest.approx(by_hand, rel=1e-6)
    assert float(gaussian_kl(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0


def make_task(**kwargs) -> VAETask:
    model = functools.partial(dense_autoencoder, latent_dim=3, hidden_sizes=[16])
    return VAETask(
        model,
        lambda n: optax.adam(1e-2),
        10,
        image_data(),
        grid_samples=9,
        interpolation_pairs=2,
        interpolation_steps=5,
        **kwargs,
    )


def test_the_negative_elbo_is_reconstruction_plus_kl_and_beta_weights_training() -> None:
    task = make_task(beta=0.0)
    state = task.init(jax.random.PRNGKey(0), None)
    batch = {
        "image": jnp.asarray(image_data().splits["val"].arrays()["image"][:8]),
        "eval_weight": jnp.ones(8),
    }
    metrics = task.finalize(jax.jit(task.eval_sums)(state, batch))
    assert float(metrics["nelbo"]) == pytest.approx(
        float(metrics["reconstruction"] + metrics["kl"]), rel=1e-6
    )
    assert float(metrics["kl"]) > 0
    _, train = jax.jit(task.train_step)(state, batch)
    assert float(train["loss"]) == pytest.approx(float(train["reconstruction"]), rel=1e-6)  # beta 0: no KL


def test_grids_decode_fixed_noise_and_interpolate_between_posterior_means() -> None:
    task = make_task()
    state = task.init(jax.random.PRNGKey(0), None)
    out = jax.jit(task.grids)(state)
    assert out["samples"].shape == (9, 8, 8, 1) and out["interpolations"].shape == (10, 8, 8, 1)
    np.testing.assert_array_equal(out["samples"], jax.jit(task.grids)(state)["samples"])  # the same noise
    assert 0.0 <= float(out["samples"].min()) and float(out["samples"].max()) <= 1.0
