"""A plain convolutional network: conv blocks with pooling, then a dense head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import jax
from flax import nnx

from research.errors import ConfigError
from research.models.conv import CONV_IMPLS, POOL_IMPLS, conv_function, resolve, tiled_max_pool
from research.models.layers import activation as activation_fn
from research.models.layers import check_rate, choice, image_shape

POOLS: dict[str, Callable[..., jax.Array]] = {"max": nnx.max_pool, "avg": nnx.avg_pool}


class ConvBlock(nnx.Module):
    """Conv (SAME padding) -> optional BatchNorm -> activation -> pooling (VALID)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        activation: Callable[[jax.Array], jax.Array],
        pool: str,
        pool_window: int,
        pool_stride: int,
        batch_norm: bool,
        batch_norm_momentum: float,
        conv_impl: str = "xla",
        pool_impl: str = "window",
        *,
        rngs: nnx.Rngs,
    ):
        # A bias before BatchNorm is redundant: BatchNorm's own bias replaces it.
        # Either implementation has nnx.Conv's parameters: checkpoints load into both.
        conv = conv_function(resolve(conv_impl, "im2col", "xla"))
        self.conv = nnx.Conv(
            in_channels,
            out_channels,
            kernel_size,
            use_bias=not batch_norm,
            conv_general_dilated=conv,
            rngs=rngs,
        )
        self.norm = (
            nnx.BatchNorm(out_channels, momentum=batch_norm_momentum, rngs=rngs) if batch_norm else None
        )
        self.activation = activation
        self.pool = pool
        self.window = (pool_window, pool_window)
        self.strides = (pool_stride, pool_stride)
        # Max pooling by reshape when the windows tile the image (window == stride).
        tiles = pool == "max" and pool_window == pool_stride
        self.tiled = tiles and resolve(pool_impl, "reshape", "window") == "reshape"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        x = self.activation(x)
        if self.tiled:
            return tiled_max_pool(x, self.window[0])
        return POOLS[self.pool](x, self.window, self.strides)


class CNN(nnx.Module):
    """``len(channels)`` conv blocks, flatten, [Linear -> activation -> Dropout] per dense size, Linear head.

    BatchNorm and Dropout follow NNX modes: batch statistics and dropout after
    ``model.train()`` (the default), running averages and no dropout after ``model.eval()``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int],
        kernel_size: int | Sequence[int] = 3,
        pool: str = "max",
        pool_window: int = 2,
        pool_stride: int = 2,
        dense_sizes: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        batch_norm_momentum: float = 0.99,
        conv_impl: str = "auto",
        pool_impl: str = "auto",
        *,
        rngs: nnx.Rngs,
    ):
        input_shape = image_shape("CNN", input_shape)
        if pool not in POOLS:
            raise ConfigError(f"model.pool={pool!r} is not one of: {', '.join(POOLS)}")
        choice("conv_impl", conv_impl, CONV_IMPLS)
        choice("pool_impl", pool_impl, POOL_IMPLS)
        self.activation = activation_fn(activation)
        rate = check_rate("dropout", dropout)
        height, width, in_channels = input_shape
        widths = [in_channels, *(int(c) for c in channels)]  # channels in and out of each block
        for _ in widths[1:]:
            height = _pooled(height, pool_window, pool_stride)
            width = _pooled(width, pool_window, pool_stride)
        if min(height, width) < 1:
            raise ConfigError(
                f"model.channels={widths[1:]} pools the {input_shape[:2]} input below 1 pixel: "
                "use fewer conv blocks or a smaller model.pool_window/pool_stride"
            )

        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.blocks = nnx.List(
            [
                ConvBlock(
                    c_in,
                    c_out,
                    kernel,
                    self.activation,
                    pool,
                    pool_window,
                    pool_stride,
                    batch_norm,
                    batch_norm_momentum,
                    conv_impl,
                    pool_impl,
                    rngs=rngs,
                )
                for c_in, c_out in pairwise(widths)
            ]
        )
        sizes = [height * width * widths[-1], *(int(d) for d in dense_sizes)]
        self.dense = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairwise(sizes)])
        self.dropout = nnx.Dropout(rate, rngs=rngs)
        self.head = nnx.Linear(sizes[-1], int(num_outputs), rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """The penultimate activations (what the head reads): the space a Frechet distance compares in."""
        for block in self.blocks:
            x = block(x)
        x = x.reshape(x.shape[0], -1)
        for layer in self.dense:
            x = self.dropout(self.activation(layer(x)))
        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def _pooled(size: int, window: int, stride: int) -> int:
    """Output length of a VALID pooling window over ``size`` positions."""
    return (size - window) // stride + 1
