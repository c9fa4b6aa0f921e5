"""U-Net (Ronneberger et al. 2015) for per-pixel outputs: an encoder, a mirrored decoder, skips.

``channels`` lists the widths of the levels from full resolution down; every level after
the first halves H and W, and the last is the bottleneck. The decoder climbs back up:
the paper's 2x2 up-convolution (stride 2) to the level's width, the encoder's features of
that level concatenated (``skip=True``), two 3x3 convs; a 1x1 conv gives ``num_outputs``
logits per pixel. The up-convolution is one matmul (each input pixel's four output pixels
at once) followed by a pixel shuffle: a ninth of the MACs of upsampling then a 3x3 conv.
``skip=False`` is the same network without the concatenations (the baseline that shows
what the skips are worth). ``encoder`` picks the encoder's blocks:
``double_conv`` (the paper's: conv-BN-act twice, 2x2 max pooling between levels) or
``resnet`` (the basic residual blocks of research/models/resnet.py, strided between levels).
``bottleneck_dense`` > 0 adds a dense layer of that width over the whole flattened bottleneck,
its output added back to every cell: as a classifier's dense layer does, it lets each cell
see the whole scene at once, where stacked 3x3 convs see it only through a narrow effective
receptive field (the input size is then fixed).
``coarse_logits`` adds class logits read off the bottleneck by a 1x1 conv, bilinearly upsampled,
to the full-resolution head's (FCN's coarse scores): the loss then reaches the level where
whole garments are told apart in one step, not through every up-convolution.
``side_logits`` adds, likewise, class logits of every decoder level below full resolution
(1x1 convs, upsampled): FCN-16s/8s's finer scores, a short path from the loss to each level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models.conv import CONV_IMPLS, conv_function, resolve, tiled_max_pool
from research.models.layers import activation as activation_fn
from research.models.layers import choice, image_shape
from research.models.resnet import BasicBlock, same_conv

ENCODERS = ("double_conv", "resnet")


class DoubleConv(nnx.Module):
    """(3x3 conv -> batch norm -> activation) twice."""

    def __init__(
        self, c_in: int, c_out: int, conv: Callable, norm: Callable, act: Callable, *, rngs: nnx.Rngs
    ):
        self.convs = nnx.List([conv(c_in, c_out, 3, 1, rngs), conv(c_out, c_out, 3, 1, rngs)])
        self.norms = nnx.List([norm(c_out, rngs=rngs), norm(c_out, rngs=rngs)])
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = self.act(norm(conv(x)))
        return x


class UpConv(nnx.Module):
    """2x2 transposed conv, stride 2: (B, h, w, c_in) -> (B, 2h, 2w, c_out), as one matmul."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(c_in, 4 * c_out, rngs=rngs)
        self.c_out = c_out

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, _ = x.shape
        y = self.linear(x).reshape(n, h, w, 2, 2, self.c_out)
        return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, self.c_out)


class ResidualLevel(nnx.Module):
    """One encoder level of residual blocks: the first strided (but at full resolution) and widening."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        conv: Callable,
        norm: Callable,
        act: Callable,
        *,
        rngs: nnx.Rngs,
    ):
        first = stride == 1  # the full-resolution level starts with a conv from the image's channels
        self.stem = conv(c_in, c_out, 3, 1, rngs) if first else None
        self.stem_norm = norm(c_out, rngs=rngs) if first else None
        self.act = act
        c_in = c_out if first else c_in
        self.block = BasicBlock(c_in, c_out, stride, act, conv, norm, False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.stem is not None:
            x = self.act(self.stem_norm(self.stem(x)))
        return self.block(x)


class UNet(nnx.Module):
    """Per-pixel logits (B, H, W, ``num_outputs``) of (B, H, W, C) images.

    Batch norm follows NNX modes, as in the CNN and ResNet.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int],
        skip: bool = True,
        encoder: str = "double_conv",
        activation: str = "relu",
        batch_norm_momentum: float = 0.9,
        conv_impl: str = "auto",
        bottleneck_dense: int = 0,
        coarse_logits: bool = False,
        side_logits: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        height, width, in_channels = image_shape("UNet", input_shape)
        widths = [int(c) for c in channels]
        step = 2 ** (len(widths) - 1)
        if len(widths) < 2 or height % step or width % step:
            raise ConfigError(
                f"model.channels={widths} needs at least 2 levels and H, W divisible by {step} "
                f"(it halves them {len(widths) - 1} times); the data gives {height}x{width}"
            )
        for key, value in (("coarse_logits", coarse_logits), ("side_logits", side_logits)):
            if not isinstance(value, bool):
                raise ConfigError(f"model.{key} must be true or false, got {value!r}")
        self.encoder_kind = choice("encoder", encoder, ENCODERS)
        impl = resolve(choice("conv_impl", conv_impl, CONV_IMPLS), "im2col", "xla")
        conv = partial(same_conv, conv_general_dilated=conv_function(impl))
        norm = partial(nnx.BatchNorm, momentum=batch_norm_momentum)
        self.act, self.skip = activation_fn(activation), bool(skip)
        ins = [in_channels, *widths[:-1]]
        if encoder == "resnet":
            down = [
                ResidualLevel(a, b, 1 if i == 0 else 2, conv, norm, self.act, rngs=rngs)
                for i, (a, b) in enumerate(zip(ins, widths, strict=True))
            ]
        else:
            down = [
                DoubleConv(a, b, conv, norm, self.act, rngs=rngs) for a, b in zip(ins, widths, strict=True)
            ]
        self.down = nnx.List(down)
        self.context = nnx.data(None)
        if bottleneck_dense:
            cells = (height // step) * (width // step) * widths[-1]
            self.context = nnx.Sequential(
                nnx.Linear(cells, int(bottleneck_dense), rngs=rngs),
                self.act,
                nnx.Linear(int(bottleneck_dense), cells, rngs=rngs),
            )
        ups, blocks = [], []
        for deep, shallow in zip(reversed(widths[1:]), reversed(widths[:-1]), strict=True):
            ups.append(UpConv(deep, shallow, rngs=rngs))
            blocks.append(DoubleConv(shallow * (2 if skip else 1), shallow, conv, norm, self.act, rngs=rngs))
        self.ups, self.up_blocks = nnx.List(ups), nnx.List(blocks)
        sides = [nnx.Conv(w, int(num_outputs), (1, 1), rngs=rngs) for w in reversed(widths[1:-1])]
        self.sides = nnx.List(sides if side_logits else [])
        self.head = nnx.Conv(widths[0], int(num_outputs), (1, 1), rngs=rngs)
        coarse = nnx.Conv(widths[-1], int(num_outputs), (1, 1), rngs=rngs) if coarse_logits else None
        self.coarse = nnx.data(coarse)

    def __call__(self, x: jax.Array) -> jax.Array:
        features = []
        for i, level in enumerate(self.down):
            if i and self.encoder_kind == "double_conv":
                x = tiled_max_pool(x, 2)
            x = level(x)
            features.append(x)
        if self.context is not None:  # every bottleneck cell sees the whole scene
            x = x + self.context(x.reshape(x.shape[0], -1)).reshape(x.shape)
        scores = [] if self.coarse is None else [self.coarse(x)]
        levels = zip(self.ups, self.up_blocks, reversed(features[:-1]), strict=True)
        for i, (up, block, skipped) in enumerate(levels):
            x = self.act(up(x))
            x = block(jnp.concatenate([x, skipped], axis=-1) if self.skip else x)
            if i < len(self.sides):
                scores.append(self.sides[i](x))
        logits = self.head(x)
        for coarse in scores:
            logits = logits + jax.image.resize(coarse, logits.shape, "bilinear").astype(logits.dtype)
        return logits
