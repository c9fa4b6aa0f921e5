"""On-device image preprocessing: normalisation and training-time augmentation.

Everything here is jittable and runs inside the compiled train step, so raw uint8
batches are all that cross from host to device. Random draws are per example, from
``jax.random`` keys, so augmentation is reproducible from the step's rng alone.
Augmentation works on images scaled to [0, 1] (padding and fill are black), then
normalisation maps them to zero mean and unit variance per channel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.data.base import Batch, Transform
from research.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Augment:
    """Which augmentations run on training batches, and how strong. Zero/False is off."""

    crop_padding: int = 0  # pad each side by this many pixels, then crop back at a random offset
    flip: bool = False  # mirror left-right with probability 1/2
    max_rotation_deg: float = 0.0  # rotate by an angle drawn from [-max, max] degrees
    max_shift: float = 0.0  # translate by up to this many pixels along each axis (sub-pixel)

    def __post_init__(self) -> None:
        for key in ("crop_padding", "max_rotation_deg", "max_shift"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.augment.{key} must be >= 0, got {getattr(self, key)}")
        if int(self.crop_padding) != self.crop_padding:
            raise ConfigError(
                f"data.augment.crop_padding must be a whole number of pixels, got {self.crop_padding}"
            )

    @property
    def affine(self) -> bool:
        return self.max_rotation_deg > 0 or self.max_shift > 0


def make_transform(
    mean: Sequence[float], std: Sequence[float], pixel_max: float, augment: Augment
) -> Transform:
    """``transform(rng, batch, train)``: scale, augment (train only), normalise ``batch["image"]``.

    ``mean``/``std`` are per channel, in units of ``pixel_max`` (so 0..1). Other
    batch entries (label, mask) pass through untouched.
    """
    if min(std) <= 0:
        raise ConfigError(f"data.normalize.std must be positive, got {list(std)}")
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)

    def transform(rng: jax.Array, batch: Batch, train: bool) -> Batch:
        image = batch["image"].astype(jnp.float32) / pixel_max
        if train:
            image = augment_images(rng, image, augment)
        return {**batch, "image": (image - mean) / std}

    return transform


def augment_images(rng: jax.Array, images: jax.Array, augment: Augment) -> jax.Array:
    """Randomly crop, flip, rotate and shift a (B, H, W, C) float batch; same shape out."""
    crop_key, flip_key, affine_key = jax.random.split(rng, 3)
    if augment.crop_padding:
        images = random_crop(crop_key, images, int(augment.crop_padding))
    if augment.flip:
        images = random_flip(flip_key, images)
    if augment.affine:
        images = random_affine(affine_key, images, augment.max_rotation_deg, augment.max_shift)
    return images


def random_crop(rng: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """Zero-pad by ``padding`` on each side, then take an (H, W) window at a random offset."""
    batch, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(rng, (batch, 2), 0, 2 * padding + 1)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    return jax.vmap(crop)(padded, offsets)


def random_flip(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(rng, shape=(images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def random_affine(rng: jax.Array, images: jax.Array, max_rotation_deg: float, max_shift: float) -> jax.Array:
    """Rotate each image by a random angle and translate it by a random sub-pixel shift."""
    batch = images.shape[0]
    angle_key, shift_key = jax.random.split(rng)
    max_angle = jnp.deg2rad(max_rotation_deg)
    angles = jax.random.uniform(angle_key, (batch,), minval=-max_angle, maxval=max_angle)
    shifts = jax.random.uniform(shift_key, (batch, 2), minval=-max_shift, maxval=max_shift)
    return affine_warp(images, angles, shifts)


def affine_warp(images: jax.Array, angles: jax.Array, shifts: jax.Array) -> jax.Array:
    """Rotate (B, H, W, C) images about their centre by ``angles`` (radians, (B,)), then
    translate them by ``shifts`` ((B, 2) pixels, rows then columns); bilinear, black outside."""
    _, height, width, _ = images.shape
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2])
    grid = jnp.stack([rows, cols]).reshape(2, -1) - centre[:, None]  # output pixels, centred

    def warp(image: jax.Array, angle: jax.Array, shift: jax.Array) -> jax.Array:
        # Output pixel p samples the input at R(angle)^-1 (p - shift): the inverse map.
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        inverse = jnp.array([[cos, sin], [-sin, cos]])
        source = inverse @ (grid - shift[:, None]) + centre[:, None]

        def resample(channel: jax.Array) -> jax.Array:
            values = jax.scipy.ndimage.map_coordinates(
                channel, list(source), order=1, mode="constant", cval=0.0
            )
            return values.reshape(height, width)

        return jax.vmap(resample, in_axes=-1, out_axes=-1)(image)

    return jax.vmap(warp)(images, angles, shifts)


NOISES = ("none", "gaussian", "salt_and_pepper", "masking")


@dataclasses.dataclass(frozen=True)
class Noise:
    """Corruption of images in [0, 1] for denoising: ``amount`` is the Gaussian's std (pixels
    stay clipped to [0, 1]), or the probability that a pixel turns black or white (salt and
    pepper, each half the time) or black (masking, Vincent et al. 2008)."""

    kind: str = "none"
    amount: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in NOISES:
            raise ConfigError(f"task.noise={self.kind!r} is not one of: {', '.join(NOISES)}")
        if self.amount < 0 or (self.kind in ("salt_and_pepper", "masking") and self.amount > 1):
            raise ConfigError(
                f"task.noise_amount={self.amount} must be >= 0 (a std), <= 1 for {self.kind} (a probability)"
            )
        if self.kind != "none" and self.amount == 0:
            raise ConfigError(f"task.noise={self.kind} needs task.noise_amount > 0 (or task.noise=none)")


def add_noise(rng: jax.Array, images: jax.Array, noise: Noise) -> jax.Array:
    """``images`` (B, H, W, C) in [0, 1], corrupted by ``noise`` (per pixel: every channel alike)."""
    if noise.kind == "none":
        return images
    if noise.kind == "gaussian":
        return jnp.clip(images + noise.amount * jax.random.normal(rng, images.shape), 0.0, 1.0)
    hit_key, salt_key = jax.random.split(rng)
    hit = jax.random.bernoulli(hit_key, noise.amount, (*images.shape[:-1], 1))
    if noise.kind == "masking":
        return jnp.where(hit, 0.0, images)
    salt = jax.random.bernoulli(salt_key, 0.5, hit.shape).astype(images.dtype)
    return jnp.where(hit, salt, images)
