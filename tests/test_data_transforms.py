"""The on-device transform: normalisation always, augmentation on training batches only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data.transforms import Augment, affine_warp, make_transform, random_crop, random_flip
from research.errors import ConfigError

ALL_ON = Augment(crop_padding=2, flip=True, max_rotation_deg=15.0, max_shift=1.0)


def batch(n: int = 16, shape: tuple[int, ...] = (8, 8, 3)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
        "label": rng.integers(0, 10, n).astype(np.int32),
    }


def jitted(augment: Augment):
    return jax.jit(make_transform([0.5] * 3, [0.25] * 3, 255.0, augment), static_argnums=2)


# Compiled once for the whole file: each new transform would compile again.
AUGMENTED, PLAIN = jitted(ALL_ON), jitted(Augment())


def test_normalises_with_the_given_per_channel_statistics() -> None:
    transform = jax.jit(make_transform([0.1, 0.5, 0.9], [0.5, 0.25, 2.0], 255.0, Augment()), static_argnums=2)
    raw = batch()
    out = transform(jax.random.key(0), raw, False)
    expected = (raw["image"] / 255.0 - np.array([0.1, 0.5, 0.9])) / np.array([0.5, 0.25, 2.0])
    np.testing.assert_allclose(out["image"], expected, rtol=1e-5, atol=1e-6)


def test_no_augmentation_configured_means_train_equals_eval() -> None:
    raw = batch()
    train = PLAIN(jax.random.key(1), raw, True)
    evaluation = PLAIN(jax.random.key(2), raw, False)
    assert np.array_equal(train["image"], evaluation["image"])


def test_augmentation_changes_images_but_keeps_shape_dtype_and_labels() -> None:
    raw = batch()
    plain = PLAIN(jax.random.key(0), raw, False)
    out = AUGMENTED(jax.random.key(0), raw, True)
    assert out["image"].shape == plain["image"].shape and out["image"].dtype == plain["image"].dtype
    assert np.array_equal(out["label"], raw["label"])
    change = np.abs(np.asarray(out["image"]) - np.asarray(plain["image"]))
    assert (change.reshape(len(raw["label"]), -1).max(axis=1) > 0).all()  # every image moved


def test_augmentation_is_a_function_of_the_key_alone() -> None:
    raw = batch()
    one = AUGMENTED(jax.random.key(7), raw, True)["image"]
    assert np.array_equal(one, AUGMENTED(jax.random.key(7), raw, True)["image"])
    assert not np.array_equal(one, AUGMENTED(jax.random.key(8), raw, True)["image"])


def test_draws_are_per_example() -> None:
    same = {k: np.repeat(v[:1], 16, axis=0) for k, v in batch().items()}
    out = np.asarray(AUGMENTED(jax.random.key(0), same, True)["image"])
    assert len({out[i].tobytes() for i in range(16)}) > 1


def test_evaluation_never_augments() -> None:
    raw = batch()
    augmented_cfg = AUGMENTED(jax.random.key(3), raw, False)
    plain = PLAIN(jax.random.key(3), raw, False)
    assert np.array_equal(augmented_cfg["image"], plain["image"])


def test_random_crop_returns_a_window_of_the_zero_padded_image() -> None:
    images = jnp.asarray(np.random.default_rng(1).random((8, 6, 6, 2)), jnp.float32)
    padding = 2
    out = np.asarray(random_crop(jax.random.key(0), images, padding))
    padded = np.pad(np.asarray(images), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    windows = [(r, c) for r in range(2 * padding + 1) for c in range(2 * padding + 1)]
    for i in range(len(out)):
        matches = [(r, c) for r, c in windows if np.array_equal(out[i], padded[i, r : r + 6, c : c + 6])]
        assert matches, f"crop {i} is not a window of its padded image"


def test_random_flip_mirrors_some_images_and_keeps_the_rest() -> None:
    images = jnp.asarray(np.random.default_rng(2).random((32, 5, 5, 1)), jnp.float32)
    out = np.asarray(random_flip(jax.random.key(0), images))
    flipped = [np.array_equal(out[i], np.asarray(images[i])[:, ::-1]) for i in range(32)]
    kept = [np.array_equal(out[i], np.asarray(images[i])) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_affine_warp_rotates_about_the_centre_and_shifts_by_whole_pixels_exactly() -> None:
    images = np.random.default_rng(3).random((2, 5, 5, 3)).astype(np.float32)
    out = np.asarray(affine_warp(images, jnp.array([np.pi / 2, 0.0]), jnp.array([[0.0, 0.0], [0.0, 1.0]])))
    np.testing.assert_allclose(out[0], np.rot90(images[0]), atol=1e-5)  # quarter turn, counter-clockwise
    np.testing.assert_allclose(out[1][:, 1:], images[1][:, :-1], atol=1e-6)  # one pixel right
    assert np.array_equal(out[1][:, 0], np.zeros_like(out[1][:, 0]))  # black fill


@pytest.mark.parametrize(
    "fields", [{"crop_padding": -1}, {"crop_padding": 1.5}, {"max_rotation_deg": -5.0}, {"max_shift": -1.0}]
)
def test_bad_augment_settings_are_config_errors(fields: dict) -> None:
    with pytest.raises(ConfigError, match="data.augment"):
        Augment(**fields)


def test_non_positive_std_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.normalize.std"):
        make_transform([0.5], [0.0], 255.0, Augment())


def test_transform_inside_a_scanned_step_augments_as_it_does_alone() -> None:
    """Each scanned step's images are the transform's output for that step's key, called on its own."""
    transform = make_transform([0.5] * 3, [0.25] * 3, 255.0, ALL_ON)
    raw = batch(4)
    keys = jax.random.split(jax.random.key(0), 3)

    def body(carry: None, k: jax.Array) -> tuple[None, jax.Array]:
        return carry, transform(k, raw, True)["image"]

    scanned = np.asarray(jax.jit(lambda ks: jax.lax.scan(body, None, ks)[1])(keys))
    for i, key in enumerate(keys):
        np.testing.assert_allclose(scanned[i], AUGMENTED(key, raw, True)["image"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(scanned[0], scanned[1])  # a fresh augmentation per step
