"""Pieces shared by the model families: activations chosen by name, and config checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from research.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "leaky_relu": jax.nn.leaky_relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name``; a config typo fails here, before any compile."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"model.activation={name!r} is not one of: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def check_rate(name: str, rate: float) -> float:
    """Dropout-like rates must lie in [0, 1)."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"model.{name}={rate} must be in [0, 1)")
    return float(rate)


def image_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``input_shape`` as (H, W, C), or a ConfigError naming ``model`` when the data is not images."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ConfigError(f"model {model} needs images (H, W, C); the data gives {shape}")
    return shape


def choice(key: str, value: str, options: Sequence[str]) -> str:
    """``value`` when it is one of ``options``; else a ConfigError naming ``model.<key>``."""
    if value not in options:
        raise ConfigError(f"model.{key}={value!r} is not one of: {', '.join(options)}")
    return value


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean of ``x`` (B, T, ...) over the real steps (``mask`` (B, T) is 1 there) of each sequence."""
    if mask is None:
        return x.mean(axis=1)
    weights = mask.astype(x.dtype).reshape(*mask.shape, *([1] * (x.ndim - 2)))
    return (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1)


def sequence_features(model: str, input_shape: Sequence[int]) -> int:
    """Features per step of float sequences (T, F), or a ConfigError naming ``model``."""
    shape = tuple(input_shape)
    if len(shape) != 2:
        raise ConfigError(f"model {model} needs float sequences (T, F) or token ids; the data gives {shape}")
    return int(shape[-1])
