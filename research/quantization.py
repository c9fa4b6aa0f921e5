"""Post-training int8 weight quantization: symmetric, one scale per output channel of each kernel.

A kernel ``w`` (Flax layout, output channels last: ``(in, out)``, ``(kh, kw, in, out)``) becomes
``q = round(w / s)`` in int8 with ``s = max|w| / 127`` over every axis but the last, and is read
back as ``q * s``. The error of a weight is at most s / 2: a per-tensor scale would let one large
channel coarsen all the others. Biases and normalisation parameters stay float32 (they are few).

Flat weights (``{"params/head/kernel": array}``, as ``research.export`` writes them) are stored as
the int8 kernel under its own name and its scales under ``<name>.scale``: :func:`quantize_flat`
and :func:`dequantize_flat` go there and back, the latter also inside a jitted (exported)
function. ``research.quantize`` and ``research.export quantize=int8`` share this module.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from research.errors import ConfigError

BITS = 8
LEVELS = 2 ** (BITS - 1) - 1  # 127: symmetric, so -128 is never used and 0 is exact
SCALE = ".scale"  # suffix of a quantized kernel's scales in flat weights
MODES = ("int8",)


def is_kernel(name: str, array: Any) -> bool:
    """What is quantized: matrices and conv filters named ``kernel`` (not biases, norms, embeddings)."""
    return name.split("/")[-1] == "kernel" and np.ndim(array) >= 2


def quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 ``q``, float32 scales shaped to broadcast over ``w``'s last axis) with ``q * s ~ w``.
    An all-zero channel (a pruned one) gets scale 1, so it reads back as exact zeros."""
    w = np.asarray(w, np.float32)
    peak = np.abs(w).max(axis=tuple(range(w.ndim - 1)), keepdims=True)
    scale = np.where(peak > 0, peak / LEVELS, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -LEVELS, LEVELS).astype(np.int8)
    return q, scale


def dequantize(q: Any, scale: Any) -> Any:
    """``q * scale`` in the scale's float type (numpy or jax arrays)."""
    return q.astype(scale.dtype) * scale


def quantize_flat(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat weights with each kernel as int8 and its scales beside it under ``<name>.scale``."""
    out: dict[str, np.ndarray] = {}
    for name, array in flat.items():
        if is_kernel(name, array):
            out[name], out[name + SCALE] = quantize(array)
        else:
            out[name] = np.asarray(array)
    return out


def dequantize_flat(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The float weights of :func:`quantize_flat`'s output (numpy or traced jax arrays)."""
    return {
        name: dequantize(array, flat[name + SCALE]) if name + SCALE in flat else array
        for name, array in flat.items()
        if not name.endswith(SCALE)
    }


def round_trip(tree: Any) -> Any:
    """``tree`` with every kernel replaced by its int8 reading (quantized, then dequantized)."""
    import jax

    def read(path: tuple, leaf: Any) -> Any:
        name = jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")
        if not is_kernel(name, leaf):
            return leaf
        return dequantize(*quantize(np.asarray(leaf))).astype(np.asarray(leaf).dtype)

    return jax.tree_util.tree_map_with_path(read, tree)


def npz_bytes(flat: Mapping[str, np.ndarray]) -> int:
    """The size of ``np.savez`` of ``flat``: the weights file ``research.export`` writes."""
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    return buffer.getbuffer().nbytes


def check_mode(mode: str | None) -> str | None:
    """``quantize=`` checked: null (float32 weights) or one of MODES."""
    if mode in (None, "", "none", "float32"):
        return None
    if mode not in MODES:
        raise ConfigError(f"quantize={mode!r} must be one of {', '.join(MODES)} (or left out: float32)")
    return mode


def flat_arrays(tree: Any) -> dict[str, np.ndarray]:
    """``tree``'s arrays by ``params/head/kernel`` names, as ``research.export`` names them (PRNG
    keys left out: the eval-mode model draws nothing)."""
    import jax

    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            out["/".join(str(getattr(k, "key", k)) for k in path)] = np.asarray(leaf)
    return out
