"""Denoising: PSNR and SSIM against hand computations, the noise transforms, the task's reports."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import metrics
from research.data.arrays import ArraySplit, identity_transform
from research.data.base import Dataset
from research.data.transforms import Noise, add_noise
from research.errors import ConfigError
from research.models.autoencoder import dense_autoencoder
from research.tasks.autoencoder import DENOISING, AutoencoderTask
from tests.conftest import TINY, run_train


def test_psnr_is_ten_log_of_peak_over_mse() -> None:
    clean = jnp.zeros((2, 4, 4, 1))
    noisy = clean.at[0].set(0.1).at[1, 0, 0, 0].set(1.0)  # MSE 0.01, and 1/16
    np.testing.assert_allclose(metrics.psnr(noisy, clean), [20.0, 10 * np.log10(16)], rtol=1e-5)
    assert float(metrics.psnr(noisy * 255, clean, max_value=255.0)[0]) == pytest.approx(20.0, rel=1e-5)


def ssim_by_hand(x: np.ndarray, y: np.ndarray, window: int, sigma: float) -> float:
    """Wang et al.'s SSIM of two (H, W) images, window by window, with the same Gaussian weights."""
    taps = np.exp(-0.5 * ((np.arange(window) - (window - 1) / 2) / sigma) ** 2)
    w = np.outer(taps, taps) / np.outer(taps, taps).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - window + 1):
        for j in range(x.shape[1] - window + 1):
            a, b = x[i : i + window, j : j + window], y[i : i + window, j : j + window]
            mu_a, mu_b = (w * a).sum(), (w * b).sum()
            var_a, var_b = (w * (a - mu_a) ** 2).sum(), (w * (b - mu_b) ** 2).sum()
            cov = (w * (a - mu_a) * (b - mu_b)).sum()
            values.append(
                (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_the_published_formula() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(9, 10))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    got = metrics.ssim(jnp.asarray(x)[None, ..., None], jnp.asarray(y)[None, ..., None], window=5, sigma=1.5)
    assert float(got[0]) == pytest.approx(ssim_by_hand(x, y, 5, 1.5), rel=1e-4)
    # Constant images: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.2, 0.6, 0.01**2
    flat = metrics.ssim(jnp.full((1, 8, 8, 1), a), jnp.full((1, 8, 8, 1), b))
    assert float(flat[0]) == pytest.approx((2 * a * b + c1) / (a**2 + b**2 + c1), rel=1e-4)  # float32
    same = jnp.asarray(x)[None, ..., None]
    assert float(metrics.ssim(same, same)[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(metrics.ssim(same, 1 - same)[0]) < 0  # anti-correlated structure


def test_each_noise_corrupts_as_it_says() -> None:
    key, grey = jax.random.PRNGKey(0), jnp.full((64, 16, 16, 1), 0.5)
    gaussian = add_noise(key, grey, Noise("gaussian", 0.1))
    assert (
        float(jnp.std(gaussian)) == pytest.approx(0.1, rel=0.05)
        and float(jnp.abs(gaussian - 0.5).max()) <= 0.5
    )
    clipped = add_noise(key, jnp.zeros((8, 8, 8, 1)), Noise("gaussian", 0.3))
    assert float(clipped.min()) == 0.0 and float(clipped.mean()) == pytest.approx(
        0.3 / np.sqrt(2 * np.pi), rel=0.1
    )
    salted = add_noise(key, grey, Noise("salt_and_pepper", 0.2))
    hit = salted != 0.5
    assert float(hit.mean()) == pytest.approx(0.2, abs=0.02) and set(np.unique(salted[hit]).tolist()) == {
        0.0,
        1.0,
    }
    masked = add_noise(key, grey, Noise("masking", 0.3))
    assert float((masked == 0).mean()) == pytest.approx(0.3, abs=0.02) and float(masked.max()) == 0.5
    assert add_noise(key, grey, Noise()) is grey
    for kind, amount in (("pink", 0.1), ("masking", 1.5), ("gaussian", 0.0), ("gaussian", -1.0)):
        with pytest.raises(ConfigError, match="task.noise"):
            Noise(kind, amount)


def image_data(n: int = 64) -> Dataset:
    rng = np.random.default_rng(0)
    arrays = {"image": rng.uniform(size=(n, 8, 8, 1)).astype(np.float32), "label": np.arange(n) % 2}
    splits = {s: ArraySplit(arrays) for s in ("train", "val", "test")}
    return Dataset("toy", (8, 8, 1), 2, splits, identity_transform, 16, 32)


def test_the_task_scores_noisy_and_denoised_images_against_the_clean_ones() -> None:
    model = functools.partial(dense_autoencoder, latent_dim=4, hidden_sizes=[16])
    noise = {"noise": "masking", "noise_amount": 0.5}
    task = AutoencoderTask(model, lambda n: optax.adam(1e-2), 10, image_data(), grid_images=4, **noise)
    state = task.init(jax.random.PRNGKey(0), None)
    assert task.metric == "val/psnr_denoised" and task.evaluators()["denoising"].metric_names() == DENOISING
    batch = {k: jnp.asarray(v[:32]) for k, v in image_data().splits["val"].arrays().items()}
    sums = jax.jit(task.denoising_sums)(state, {**batch, "eval_weight": jnp.ones(32)})
    means = task.denoising_means(sums)
    noisy = add_noise(task.eval_noise_key, batch["image"], task.noise)
    assert float(means["psnr_noisy"]) == pytest.approx(
        float(metrics.psnr(noisy, batch["image"]).mean()), rel=1e-5
    )
    gain = float(means["psnr_denoised"]) - float(means["psnr_noisy"])
    assert float(means["psnr_gain"]) == pytest.approx(gain, abs=1e-4)
    grid = task.grids(state)["denoising"]
    assert grid.shape == (12, 8, 8, 1)
    np.testing.assert_array_equal(grid[8:], task.grid_inputs)  # the clean row
    assert float((grid[:4] == 0).mean()) > 0.4  # the masked row


def test_a_digits_denoising_run_gains_psnr_and_draws_the_grids(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(
        "+experiment=digits_autoencoder", "task.noise=gaussian", "task.noise_amount=0.3",
        "trainer.max_steps=120", "trainer.eval_every=60", *TINY, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/psnr_denoised"] > summary["test/psnr_noisy"] + 1.0, summary
    assert 0 < summary["test/ssim_noisy"] <= 1 and 0 < summary["test/ssim_denoised"] <= 1
    assert (run_dir / "plots" / "denoising.png").stat().st_size > 0
