"""Convolution and max pooling as slices, reshapes and one matmul.

On XLA:CPU the gradients of ``lax.conv_general_dilated`` run 10-20x slower inside a
``lax.scan`` (the engine scans ``trainer.steps_per_call`` steps per dispatch) than
outside it: XLA does not rewrite them into its fast (Eigen) layout in a loop body
(jax-ml/jax#12868). Written here as slices and an ``einsum``, their forward and both
gradients are matmuls and pads, fast inside a scan too; and max pooling by reshape has
a compare-and-multiply gradient instead of ``select_and_scatter``. Each gives the same
values as the XLA operation (tests/test_conv.py). See "Convolutions on XLA:CPU" in
docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

CONV_IMPLS = ("auto", "xla", "im2col")  # auto: im2col on the CPU backend, xla (cuDNN, TPU convs) elsewhere
POOL_IMPLS = ("auto", "window", "reshape")  # auto: reshape on the CPU backend, window elsewhere


def resolve(impl: str, on_cpu: str, elsewhere: str) -> str:
    """``impl``, with ``auto`` replaced by the choice for the backend JAX runs on."""
    if impl != "auto":
        return impl
    return on_cpu if jax.default_backend() == "cpu" else elsewhere


def im2col_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "SAME",
    precision: Any = None,
) -> jax.Array:
    """2-D convolution of ``x`` (N, H, W, C) with ``kernel`` (kh, kw, C, O), as ``lax.conv`` pads and strides.

    The kh*kw shifted (strided) views of the padded input, side by side on the channel
    axis, contracted with the kernel in one ``einsum``.
    """
    kh, kw, c_in, c_out = kernel.shape
    sh, sw = strides
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
    (top, bottom), (left, right) = padding
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    rows = (padded.shape[1] - kh) // sh + 1
    cols = (padded.shape[2] - kw) // sw + 1
    shifted = [
        padded[:, i : i + (rows - 1) * sh + 1 : sh, j : j + (cols - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    columns = jnp.concatenate(shifted, axis=-1)  # (N, rows, cols, kh*kw*C), in the kernel's order
    return jnp.einsum("nhwk,ko->nhwo", columns, kernel.reshape(kh * kw * c_in, c_out), precision=precision)


def im2col_conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated``'s signature (``nnx.Conv(conv_general_dilated=...)``), by ``im2col_conv``.

    The convolutions it covers (2-D, NHWC/HWIO, no dilation, one feature group, padding
    >= 0, no sharding or element-type options) go through ``im2col_conv``; any other falls
    back to ``lax.conv_general_dilated``.
    """
    canonical = lhs.ndim == 4 and dimension_numbers == jax.lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")
    )
    undilated = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    padded = isinstance(padding, str) or all(p >= 0 for pair in padding for p in pair)
    if (
        canonical
        and undilated
        and padded
        and feature_group_count == 1
        and all(v is None for v in kwargs.values())
    ):
        return im2col_conv(lhs, rhs, window_strides, padding, precision)
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision=precision, **kwargs,
    )  # fmt: skip


def conv_function(impl: str) -> Callable[..., jax.Array]:
    """What ``nnx.Conv(conv_general_dilated=...)`` should call for ``model.conv_impl`` (after ``resolve``)."""
    return im2col_conv_general_dilated if impl == "im2col" else jax.lax.conv_general_dilated


def tiled_max_pool(x: jax.Array, window: int) -> jax.Array:
    """Max over non-overlapping ``window`` x ``window`` tiles (VALID: a ragged edge is dropped).

    Equal to ``nnx.max_pool(x, (w, w), (w, w))``; its gradient is a compare and a
    multiply instead of ``select_and_scatter`` (ties, rare in float activations,
    share the gradient instead of giving it to the first maximum).
    """
    n, height, width, channels = x.shape
    rows, cols = height // window, width // window
    tiles = x[:, : rows * window, : cols * window].reshape(n, rows, window, cols, window, channels)
    return tiles.max(axis=(2, 4))
