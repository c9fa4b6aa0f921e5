"""DCGAN-style generator and discriminator: the convolutional halves of the autoencoder.

The generator maps noise (with a one-hot class appended, for a conditional GAN) to pixel
logits through upsampling convs; the discriminator maps an image (with one-hot class
planes appended) through strided convs to one real-vs-fake logit. The task passes the
input sizes, so a conditional GAN needs no model config of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx

from research.models.autoencoder import ConvDecoder, ConvEncoder


def generator(
    input_dim: int,
    output_shape: Sequence[int],
    channels: Sequence[int],
    kernel_size: int = 4,
    activation: str = "relu",
    *,
    rngs: nnx.Rngs,
) -> ConvDecoder:
    """(B, input_dim) -> (B, H, W, C) pixel logits; ``channels`` lists the widths from the image up."""
    return ConvDecoder(input_dim, output_shape, channels, kernel_size, activation, rngs=rngs)


def discriminator(
    input_shape: Sequence[int],
    channels: Sequence[int],
    kernel_size: int = 4,
    activation: str = "leaky_relu",
    *,
    rngs: nnx.Rngs,
) -> ConvEncoder:
    """(B, H, W, C) -> (B, 1) logit of "real"."""
    return ConvEncoder(input_shape, 1, channels, kernel_size, activation, rngs=rngs)
