"""Residual networks (He et al. 2016): the CIFAR family and the ImageNet family.

CIFAR ResNet-20/32/56/110: a 3x3 stem, three stages of ``n`` basic blocks of widths
16, 32, 64, global average pooling, a linear head (depth ``6n + 2``). ImageNet
ResNet-18/34 (basic blocks) and 50/101/152 (bottleneck blocks): a 7x7 stride-2 stem with
max pooling and four stages of widths 64-512. The first block of every stage but the
first halves the resolution; where a block changes the shape its shortcut is a strided
1x1 conv with batch norm (the paper's option B, as in torchvision and the Flax examples).
``conv_impl`` chooses how the convs run (``research/models/conv.py``: im2col on CPU, where
``lax.conv`` gradients are slow inside the engine's scanned steps); the parameters are the same.
``scan_layers`` runs the identical blocks of each stage (all but its first, which changes the
shape) as one stacked block under ``nnx.scan`` (research/models/stacking.py): a stage's
parameters are then ``stages/<i>/first/...`` and ``stages/<i>/blocks/...`` (leading axis: the
block) instead of ``stages/<i>/<j>/...``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
from flax import nnx

from research.errors import ConfigError
from research.models.conv import CONV_IMPLS, conv_function, resolve
from research.models.layers import activation as activation_fn
from research.models.layers import choice, image_shape
from research.models.stacking import apply_blocks, check_remat, make_blocks

STEMS = ("cifar", "imagenet")
# He initialisation over the output fan, as torchvision's ResNet.
CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


ConvFactory = Callable[..., nnx.Conv]  # (c_in, c_out, kernel, stride, rngs) -> nnx.Conv


def same_conv(
    c_in: int, c_out: int, kernel: int, stride: int, rngs: nnx.Rngs, conv_general_dilated: Callable
) -> nnx.Conv:
    """A bias-free SAME conv (He init, fan out): the factory the ResNet's and the U-Net's blocks take."""
    return nnx.Conv(
        c_in,
        c_out,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        use_bias=False,  # batch norm follows every conv and brings its own bias
        kernel_init=CONV_INIT,
        conv_general_dilated=conv_general_dilated,
        rngs=rngs,
    )


class Shortcut(nnx.Module):
    """Strided 1x1 conv + batch norm: the identity's stand-in where a block changes the shape."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        conv: ConvFactory,
        norm: Callable[..., nnx.BatchNorm],
        rngs: nnx.Rngs,
    ):
        self.conv = conv(c_in, c_out, 1, stride, rngs)
        self.norm = norm(c_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.conv(x))


class ResidualBlock(nnx.Module):
    """Convs, each followed by batch norm and (but the last) the activation; plus the shortcut;
    then the activation. Subclasses give the convs as (kernel, output channels, stride).
    """

    expansion: int

    @classmethod
    def layout(cls, width: int, stride: int) -> list[tuple[int, int, int]]:
        raise NotImplementedError

    def __init__(
        self,
        c_in: int,
        width: int,
        stride: int,
        act: Callable[[jax.Array], jax.Array],
        conv: ConvFactory,
        norm: Callable[..., nnx.BatchNorm],
        zero_init_residual: bool,
        *,
        rngs: nnx.Rngs,
    ):
        self.act = act
        layout = self.layout(width, stride)
        convs, norms, channels = [], [], c_in
        for i, (kernel, c_out, s) in enumerate(layout):
            convs.append(conv(channels, c_out, kernel, s, rngs))
            last = i == len(layout) - 1
            norms.append(norm(c_out, scale_init=_last_scale(zero_init_residual and last), rngs=rngs))
            channels = c_out
        self.convs, self.norms = nnx.List(convs), nnx.List(norms)
        changes = stride != 1 or c_in != channels
        self.shortcut = Shortcut(c_in, channels, stride, conv, norm, rngs) if changes else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = norm(conv(y))
            if i < len(self.convs) - 1:
                y = self.act(y)
        return self.act(y + (x if self.shortcut is None else self.shortcut(x)))


class BasicBlock(ResidualBlock):
    """3x3 conv -> BN -> act -> 3x3 conv -> BN, plus the shortcut, then act (ResNet-18/34, CIFAR)."""

    expansion = 1

    @classmethod
    def layout(cls, width: int, stride: int) -> list[tuple[int, int, int]]:
        return [(3, width, stride), (3, width, 1)]


class Bottleneck(ResidualBlock):
    """1x1 conv (width) -> 3x3 conv (width, strided) -> 1x1 conv (4 x width), BN after each (ResNet-50+)."""

    expansion = 4

    @classmethod
    def layout(cls, width: int, stride: int) -> list[tuple[int, int, int]]:
        return [(1, width, 1), (3, width, stride), (1, width * cls.expansion, 1)]


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ScannedStage(nnx.Module):
    """A stage's first block, then its identical others stacked and scanned (``scan_layers``)."""

    def __init__(self, first: nnx.Module, make: Callable[[nnx.Rngs], nnx.Module], rest: int, rngs: nnx.Rngs):
        self.first = first
        self.blocks = make_blocks(make, rest, True, rngs) if rest else None

    def __call__(self, x: jax.Array, remat: str) -> jax.Array:
        x = apply_blocks(nnx.List([self.first]), x, scan=False, remat=remat)
        return x if self.blocks is None else apply_blocks(self.blocks, x, scan=True, remat=remat)


class ResNet(nnx.Module):
    """Stem, ``len(stage_sizes)`` stages of residual blocks, global average pool, linear head.

    Batch norm follows NNX modes: batch statistics after ``model.train()``, running
    averages after ``model.eval()``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        stage_sizes: Sequence[int],
        widths: Sequence[int],
        block: str,
        stem: str,
        stem_width: int,
        activation: str,
        batch_norm_momentum: float,
        batch_norm_epsilon: float,
        zero_init_residual: bool,
        conv_impl: str = "auto",
        remat: str = "none",
        scan_layers: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        input_shape = image_shape("ResNet", input_shape)
        impl = resolve(choice("conv_impl", conv_impl, CONV_IMPLS), "im2col", "xla")
        conv = partial(same_conv, conv_general_dilated=conv_function(impl))
        if block not in BLOCKS:
            raise ConfigError(f"model.block={block!r} is not one of: {', '.join(BLOCKS)}")
        if stem not in STEMS:
            raise ConfigError(f"model.stem={stem!r} is not one of: {', '.join(STEMS)}")
        if len(stage_sizes) != len(widths) or not stage_sizes or min(stage_sizes) < 1:
            raise ConfigError(
                f"model.stage_sizes={list(stage_sizes)} and model.widths={list(widths)} need one "
                "positive block count per width"
            )
        self.act = activation_fn(activation)
        self.remat = check_remat(remat)
        norm = partial(nnx.BatchNorm, momentum=batch_norm_momentum, epsilon=batch_norm_epsilon)
        self.stem_kind = stem
        kernel, stride = (3, 1) if stem == "cifar" else (7, 2)
        self.stem = conv(input_shape[-1], stem_width, kernel, stride, rngs)
        self.stem_norm = norm(stem_width, rngs=rngs)

        kind, block_args = BLOCKS[block], (self.act, conv, norm, zero_init_residual)
        c_in, stages = stem_width, []
        self.scan_layers = bool(scan_layers)
        for i, (size, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            first = kind(c_in, int(width), 2 if i > 0 else 1, *block_args, rngs=rngs)
            c_in = int(width) * kind.expansion
            make = partial(_same_shape_block, kind, c_in, int(width), block_args)
            if self.scan_layers:
                stages.append(ScannedStage(first, make, int(size) - 1, rngs))
            else:
                stages.append(nnx.List([first, *(make(rngs) for _ in range(int(size) - 1))]))
        self.stages = nnx.List(stages)
        self.head = nnx.Linear(c_in, int(num_outputs), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.act(self.stem_norm(self.stem(x)))
        if self.stem_kind == "imagenet":
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for stage in self.stages:
            if self.scan_layers:
                x = stage(x, self.remat)
            else:
                x = apply_blocks(stage, x, scan=False, remat=self.remat)
        return self.head(x.mean(axis=(1, 2)))


def _same_shape_block(kind: type, c: int, width: int, block_args: tuple, rngs: nnx.Rngs) -> nnx.Module:
    """A stage's block after its first: stride 1, as many channels in as out, no shortcut conv."""
    return kind(c, width, 1, *block_args, rngs=rngs)


def _last_scale(zero: bool) -> nnx.Initializer:
    """Zero-initialised last batch-norm scale makes each block start as the identity (Goyal et al.)."""
    return nnx.initializers.zeros_init() if zero else nnx.initializers.ones_init()
