"""Attribution methods: integrated gradients' completeness, gradients of a linear score, the overlays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import ConfigError
from research.evaluators.saliency import Saliency, gradient, integrated_gradients, overlay, smoothgrad

KEYS = jax.random.split(jax.random.PRNGKey(0), 4)
W1, W2 = jax.random.normal(KEYS[0], (16, 8)), jax.random.normal(KEYS[1], (8,))


def score(x: jax.Array) -> jax.Array:
    """A smooth non-linear score per example of (N, 4, 4, 1) images."""
    return jnp.tanh(x.reshape(len(x), -1) @ W1) @ W2


def test_integrated_gradients_sum_to_the_score_difference_from_the_baseline() -> None:
    x = jax.random.uniform(KEYS[2], (5, 4, 4, 1))
    baseline = jnp.zeros_like(x)
    attributions = integrated_gradients(score, x, baseline, steps=64)
    gap = score(x) - score(baseline)
    np.testing.assert_allclose(attributions.reshape(5, -1).sum(-1), gap, rtol=1e-3, atol=1e-3)
    coarse = integrated_gradients(score, x, baseline, steps=2).reshape(5, -1).sum(-1)
    assert np.abs(coarse - gap).max() > np.abs(attributions.reshape(5, -1).sum(-1) - gap).max()


def test_gradient_and_smoothgrad_of_a_linear_score_are_its_weights() -> None:
    w = jax.random.normal(KEYS[3], (4, 4, 1))
    x = jax.random.uniform(KEYS[2], (3, 4, 4, 1))

    def linear(z: jax.Array) -> jax.Array:
        return (z * w).reshape(len(z), -1).sum(-1)

    np.testing.assert_allclose(gradient(linear, x), np.broadcast_to(w, x.shape), atol=1e-6)
    np.testing.assert_allclose(smoothgrad(linear, x, KEYS[0], 4, 0.2), np.broadcast_to(w, x.shape), atol=1e-5)


def test_overlay_is_an_enlarged_rgb_image_in_the_unit_range() -> None:
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    out = overlay(x, np.random.default_rng(1).normal(size=x.shape))
    assert out.shape == (2, 64, 64, 3) and out.min() >= 0 and out.max() <= 1


def test_a_task_without_logits_fails_with_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        Saliency(
            task=object(),
            dataset=None,
            methods=["gradient"],
            num_examples=4,
            smoothgrad_samples=2,
            smoothgrad_noise=0.1,
            ig_steps=8,
            seed=0,
            pixel_max=1,
        )
    assert str(err.value).startswith("evaluators.saliency needs an image classifier") and "\n" not in str(
        err.value
    )
