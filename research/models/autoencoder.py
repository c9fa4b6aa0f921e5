"""Encoders and decoders for images: dense and convolutional, shared by the AE, VAE and GAN.

An autoencoder is ``encode(x) -> code`` and ``decode(z) -> logits``: the decoder returns
unbounded pixel logits (the task applies the sigmoid or a Bernoulli likelihood), so one
model serves every reconstruction loss. With ``gaussian=True`` (the VAE's) the code is
twice ``latent_dim`` wide: the posterior's mean and log-variance. No batch norm or
dropout: every variable is an ``nnx.Param``, so the steps need no mode switching.
The GAN reuses the halves alone: ``ConvDecoder`` as a generator, ``ConvEncoder`` as a
discriminator with one output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models.conv import CONV_IMPLS, conv_function, resolve
from research.models.layers import activation as activation_fn
from research.models.layers import choice, image_shape


class DenseEncoder(nnx.Module):
    """Flatten -> [Linear -> activation] per hidden size -> Linear to ``num_outputs``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_sizes: Sequence[int],
        activation: str,
        *,
        rngs: nnx.Rngs,
    ):
        sizes = [math.prod(input_shape), *(int(h) for h in hidden_sizes)]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairwise(sizes)])
        self.head = nnx.Linear(sizes[-1], int(num_outputs), rngs=rngs)
        self.activation = activation_fn(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            x = self.activation(layer(x))
        return self.head(x)


class DenseDecoder(nnx.Module):
    """The mirror: [Linear -> activation] per hidden size -> Linear to every pixel, reshaped."""

    def __init__(
        self,
        latent_dim: int,
        output_shape: Sequence[int],
        hidden_sizes: Sequence[int],
        activation: str,
        *,
        rngs: nnx.Rngs,
    ):
        self.output_shape = tuple(output_shape)
        self.body = DenseEncoder((latent_dim,), math.prod(output_shape), hidden_sizes, activation, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.body(z).reshape(z.shape[0], *self.output_shape)


class ConvEncoder(nnx.Module):
    """[Conv stride 2 -> activation] per channel count (each halves H and W), flatten, Linear.

    ``conv_impl`` as the CNN's (``research.models.conv``): ``auto`` runs the convs as im2col
    matmuls on CPU, whose gradients stay fast inside the engine's scanned steps.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int],
        kernel_size: int,
        activation: str,
        conv_impl: str = "auto",
        *,
        rngs: nnx.Rngs,
    ):
        height, width, in_channels = _halvable("ConvEncoder", input_shape, len(channels))
        widths = [in_channels, *(int(c) for c in channels)]
        k = (kernel_size, kernel_size)
        conv = _conv(conv_impl)
        self.convs = nnx.List(
            [nnx.Conv(a, b, k, strides=2, conv_general_dilated=conv, rngs=rngs) for a, b in pairwise(widths)]
        )
        self.head = nnx.Linear(height * width * widths[-1], int(num_outputs), rngs=rngs)
        self.activation = activation_fn(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = self.activation(conv(x))
        return self.head(x.reshape(x.shape[0], -1))


class ConvDecoder(nnx.Module):
    """Linear to the smallest feature map, [2x nearest upsampling -> Conv -> activation] per channel
    count (each doubles H and W), then a 3x3 conv to the image's channels.

    Upsample-then-conv rather than a transposed conv: no checkerboard artefacts (Odena et al.
    2016), and on CPU its gradient measured ~3x faster (XLA:CPU's input-dilated convolutions are slow).
    ``conv_impl`` as ``ConvEncoder``'s.
    """

    def __init__(
        self,
        latent_dim: int,
        output_shape: Sequence[int],
        channels: Sequence[int],
        kernel_size: int,
        activation: str,
        conv_impl: str = "auto",
        *,
        rngs: nnx.Rngs,
    ):
        height, width, out_channels = _halvable("ConvDecoder", output_shape, len(channels))
        widths = [int(c) for c in reversed(channels)]
        self.start = (height, width, widths[0])
        self.project = nnx.Linear(int(latent_dim), height * width * widths[0], rngs=rngs)
        k = (kernel_size, kernel_size)
        ups = pairwise([widths[0], *widths])  # the first keeps its width while doubling the size
        conv = _conv(conv_impl)
        self.ups = nnx.List([nnx.Conv(a, b, k, conv_general_dilated=conv, rngs=rngs) for a, b in ups])
        self.out = nnx.Conv(widths[-1], out_channels, (3, 3), conv_general_dilated=conv, rngs=rngs)
        self.activation = activation_fn(activation)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.activation(self.project(z)).reshape(z.shape[0], *self.start)
        for conv in self.ups:
            x = self.activation(conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)))
        return self.out(x)


class Autoencoder(nnx.Module):
    """An encoder to a ``latent_dim`` code (mean and log-variance when ``gaussian``) and a decoder back."""

    def __init__(self, encoder: nnx.Module, decoder: nnx.Module, latent_dim: int):
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, int(latent_dim)

    def encode(self, x: jax.Array) -> jax.Array:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)


def dense_autoencoder(
    input_shape: Sequence[int],
    latent_dim: int,
    hidden_sizes: Sequence[int],
    activation: str = "relu",
    gaussian: bool = False,
    *,
    rngs: nnx.Rngs,
) -> Autoencoder:
    """Dense encoder ``hidden_sizes`` -> ``latent_dim``; the decoder mirrors the hidden sizes."""
    shape = image_shape("dense_autoencoder", input_shape)
    code = latent_dim * (2 if gaussian else 1)
    encoder = DenseEncoder(shape, code, hidden_sizes, activation, rngs=rngs)
    decoder = DenseDecoder(latent_dim, shape, list(reversed(hidden_sizes)), activation, rngs=rngs)
    return Autoencoder(encoder, decoder, latent_dim)


def conv_autoencoder(
    input_shape: Sequence[int],
    latent_dim: int,
    channels: Sequence[int],
    kernel_size: int = 3,
    activation: str = "relu",
    gaussian: bool = False,
    conv_impl: str = "auto",
    *,
    rngs: nnx.Rngs,
) -> Autoencoder:
    """Strided convs ``channels`` down to ``latent_dim``; upsampling convs back up."""
    shape = image_shape("conv_autoencoder", input_shape)
    code = latent_dim * (2 if gaussian else 1)
    encoder = ConvEncoder(shape, code, channels, kernel_size, activation, conv_impl, rngs=rngs)
    decoder = ConvDecoder(latent_dim, shape, channels, kernel_size, activation, conv_impl, rngs=rngs)
    return Autoencoder(encoder, decoder, latent_dim)


def _conv(impl: str):
    """The ``conv_general_dilated`` for ``model.conv_impl`` (a ConfigError for an unknown one)."""
    return conv_function(resolve(choice("conv_impl", impl, CONV_IMPLS), "im2col", "xla"))


def _halvable(model: str, shape: Sequence[int], times: int) -> tuple[int, int, int]:
    """(H, W, C) after halving H and W ``times``; a ConfigError when they do not divide."""
    height, width, channels = image_shape(model, shape)
    step = 2**times
    if times < 1 or height % step or width % step:
        raise ConfigError(
            f"model {model}: {times} stride-2 layers (model.channels) need H and W divisible by {step}, "
            f"the data gives {height}x{width}"
        )
    return height // step, width // step, channels
