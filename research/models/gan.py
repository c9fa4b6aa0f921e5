"""DCGAN-style generator and discriminator: the convolutional halves of the autoencoder.

The generator maps noise (with a one-hot class appended, for a conditional GAN) to pixel
logits through upsampling convs; the discriminator maps an image (with one-hot class
planes appended) through strided convs to one real-vs-fake logit. The task passes the
input sizes, so a conditional GAN needs no model config of its own. ``dense_generator`` and
``DenseDiscriminator`` are the same two players as MLPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models.autoencoder import ConvDecoder, ConvEncoder, DenseDecoder
from research.models.conv import im2col_conv
from research.models.layers import activation as activation_fn
from research.models.layers import choice


def generator(
    input_dim: int,
    output_shape: Sequence[int],
    channels: Sequence[int],
    kernel_size: int = 4,
    activation: str = "relu",
    conv_impl: str = "auto",
    *,
    rngs: nnx.Rngs,
) -> ConvDecoder:
    """(B, input_dim) -> (B, H, W, C) pixel logits; ``channels`` lists the widths from the image up."""
    return ConvDecoder(input_dim, output_shape, channels, kernel_size, activation, conv_impl, rngs=rngs)


def discriminator(
    input_shape: Sequence[int],
    channels: Sequence[int],
    kernel_size: int = 4,
    activation: str = "leaky_relu",
    conv_impl: str = "auto",
    *,
    rngs: nnx.Rngs,
) -> ConvEncoder:
    """(B, H, W, C) -> (B, 1) logit of "real"."""
    return ConvEncoder(input_shape, 1, channels, kernel_size, activation, conv_impl, rngs=rngs)


class DenseGenerator(nnx.Module):
    """(B, input_dim) -> (B, H, W, C) pixel logits: [Linear -> activation] per hidden size, then
    either a Linear to every pixel or, with ``head_channels``, to H x W x head_channels planes
    mixed into the image by one ``head_kernel`` conv.

    No convolutions over feature maps: on XLA:CPU a convolution's gradients inside the
    engine's scanned steps run ~20x slower than outside one (docs/benchmarks.md). The one
    small head conv (an im2col matmul) lets neighbouring pixels share what the MLP draws: a
    pure MLP's samples of Fashion-MNIST were speckled, and a classifier trained on them learnt
    the speckle.
    """

    def __init__(
        self,
        input_dim: int,
        output_shape: Sequence[int],
        hidden_sizes: Sequence[int],
        activation: str = "relu",
        head_channels: int = 0,
        head_kernel: int = 3,
        *,
        rngs: nnx.Rngs,
    ):
        height, width, channels = (int(d) for d in output_shape)
        planes = int(head_channels) or channels
        self.body = DenseDecoder(input_dim, (height, width, planes), hidden_sizes, activation, rngs=rngs)
        k = (int(head_kernel), int(head_kernel))
        self.head = nnx.Conv(planes, channels, k, rngs=rngs) if head_channels else None
        self.activation = activation_fn(activation)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.body(z)
        if self.head is None:
            return x
        return im2col_conv(self.activation(x), self.head.kernel[...]) + self.head.bias[...]


def dense_generator(
    input_dim: int,
    output_shape: Sequence[int],
    hidden_sizes: Sequence[int],
    activation: str = "relu",
    head_channels: int = 0,
    head_kernel: int = 3,
    *,
    rngs: nnx.Rngs,
) -> DenseGenerator:
    """The MLP generator (see ``DenseGenerator``)."""
    return DenseGenerator(
        input_dim, output_shape, hidden_sizes, activation, head_channels, head_kernel, rngs=rngs
    )


CONDITIONINGS = ("projection", "concat")


class DenseDiscriminator(nnx.Module):
    """Pixels through [Linear -> activation] per hidden size to features h, then one logit.

    The task appends one constant plane per class to the image (``input_shape`` counts them);
    one pixel of the planes is the one-hot class y. ``conditioning``: ``projection`` scores
    ``w.h + embed(y).h`` (Miyato & Koyama 2018; on Fashion-MNIST appending y left the samples of
    every class alike), ``concat`` appends y to the pixels (on digits its samples were more
    varied: a classifier trained on them tested 0.90 against projection's 0.86).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden_sizes: Sequence[int],
        image_channels: int,
        conditioning: str = "projection",
        activation: str = "leaky_relu",
        *,
        rngs: nnx.Rngs,
    ):
        height, width, channels = (int(d) for d in input_shape)
        if not 0 < int(image_channels) <= channels or not hidden_sizes:
            raise ConfigError(
                f"image_channels={image_channels} must be in [1, {channels}] (the image's channels, "
                f"without the class planes) and hidden_sizes={list(hidden_sizes)} not empty"
            )
        self.image_channels, classes = int(image_channels), channels - int(image_channels)
        self.project = choice("conditioning", conditioning, CONDITIONINGS) == "projection" and classes > 0
        pixels = height * width * self.image_channels
        sizes = [pixels if self.project else pixels + classes, *(int(h) for h in hidden_sizes)]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairwise(sizes)])
        self.head = nnx.Linear(sizes[-1], 1, rngs=rngs)
        self.embed = nnx.Linear(classes, sizes[-1], use_bias=False, rngs=rngs) if self.project else None
        self.activation = activation_fn(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x[..., : self.image_channels].reshape(x.shape[0], -1)
        one_hot = x[:, 0, 0, self.image_channels :]
        if not self.project:
            h = jnp.concatenate([h, one_hot], -1)
        for layer in self.layers:
            h = self.activation(layer(h))
        logit = self.head(h)
        if self.embed is None:
            return logit
        return logit + jnp.sum(self.embed(one_hot) * h, axis=-1, keepdims=True)
