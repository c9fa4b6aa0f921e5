"""Repeated blocks, unrolled or scanned, with rematerialisation chosen by name.

``model.scan_layers=true`` keeps the ``depth`` identical blocks as ONE module whose
variables carry a leading layer axis (made by ``nnx.vmap`` over split RNG streams) and
runs them with ``nnx.scan``: the compiled program holds one block, so compile time stays
flat with depth (MaxText's ``scan_layers``, big_vision's ViT ``scan``). ``model.remat=<name>``
wraps each block in ``nnx.remat`` with a ``jax.checkpoint_policies`` policy: the backward
pass recomputes what the policy does not save, trading compute for activation memory.

Both layouts keep the blocks under one attribute, ``blocks``, and hold the same numbers:
unrolled ``.../blocks/<i>/<rest>``, stacked ``.../blocks/<rest>`` with layer ``i`` at index
``i`` of the leading axis. ``to_layout`` converts a checkpoint's arrays between the two
(``trainer.init_from``), and ``layout_hint`` names the setting when a checkpoint of the
other layout is restored as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from flax import nnx

from research.errors import ConfigError

# model.remat -> the jax.checkpoint_policies policy; "none" does not rematerialise at all.
REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}
_UNROLLED = re.compile(r"^(.*?)((?:^|/)blocks/)(\d+)/(.*)$")  # prefix, "/blocks/", layer, rest
_STACKED = re.compile(r"^(.*?)((?:^|/)blocks/)(?!\d+/)(.*)$")  # prefix, "/blocks/", rest
# A ResNet stage (``models/resnet.py``): blocks ``stages/<i>/<j>/...`` unrolled; scanned, block 0
# (it changes the shape) as ``stages/<i>/first/...`` and blocks 1.. stacked as ``stages/<i>/blocks/...``.
_STAGE_UNROLLED = re.compile(r"^(.*?stages/\d+/)(\d+)/(.*)$")  # stage, block, rest
_STAGE_STACKED = re.compile(r"^(.*?stages/\d+/)(first|blocks)/(.*)$")  # stage, part, rest


def check_remat(name: str) -> str:
    """``model.remat`` when it names a policy; else one line listing the known ones."""
    if name not in REMAT_POLICIES:
        raise ConfigError(f"model.remat={name!r} is not one of: {', '.join(REMAT_POLICIES)}")
    return name


def make_blocks(make: Callable[[nnx.Rngs], nnx.Module], depth: int, scan: bool, rngs: nnx.Rngs) -> nnx.Module:
    """``depth`` blocks from ``make(rngs)``: an ``nnx.List``, or (``scan``) one block whose
    variables (parameters, RNG streams, batch statistics) are stacked over a leading axis."""
    if depth < 1:
        raise ConfigError(f"model.depth={depth} must be at least 1")
    if not scan:
        return nnx.List([make(rngs) for _ in range(depth)])

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    return create(rngs)


def apply_blocks(blocks: nnx.Module, x: jax.Array, *args: Any, scan: bool, remat: str) -> jax.Array:
    """``x = block(x, *args)`` for each block in turn: a Python loop over an ``nnx.List``, or
    ``nnx.scan`` over a stacked block; each call rematerialised under the ``remat`` policy."""

    def apply(block: nnx.Module, x: jax.Array) -> jax.Array:
        if remat == "none":
            return block(x, *args)
        return rematerialised(block, x, *args, policy=REMAT_POLICIES[check_remat(remat)])

    if not scan:
        for block in blocks:
            x = apply(block, x)
        return x

    def step(x: jax.Array, block: nnx.Module) -> jax.Array:
        return apply(block, x)

    return nnx.scan(step, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry, graph_updates=False)(x, blocks)


def rematerialised(
    block: nnx.Module, x: jax.Array, *args: Any, policy: Callable[..., bool] | None
) -> jax.Array:
    """``block(x, *args)`` under ``jax.checkpoint(policy=...)``, the block's variables passed in and
    its updates (batch statistics, RNG counts) passed out, then written back at the caller's trace
    level: ``nnx.remat`` writes them from inside its own trace, which fails under ``jax.grad``.
    """
    graph, state = nnx.split(block)

    def pure(state: nnx.State, x: jax.Array) -> tuple[jax.Array, nnx.State]:
        inner = nnx.merge(graph, state)
        return inner(x, *args), nnx.state(inner)

    y, state = jax.checkpoint(pure, policy=policy)(state, x)
    nnx.update(block, state)
    return y


def to_layout(arrays: dict[str, np.ndarray], wanted: Iterable[str]) -> dict[str, np.ndarray]:
    """``arrays`` (path -> array, a checkpoint's) plus the ``wanted`` paths it lacks, made from the
    other layout: stacked from ``.../blocks/0..n-1/<rest>``, or a layer of ``.../blocks/<rest>``
    (a ResNet stage: ``first`` is block 0, ``blocks`` stacks 1..n-1). Paths that neither layout
    supplies stay absent, for the caller to report.
    """
    out = dict(arrays)
    for name in wanted:
        if name in out:
            continue
        if (m := _STAGE_UNROLLED.match(name) or _STAGE_STACKED.match(name)) is not None:
            _stage_layer(arrays, out, name, *m.groups())
        elif (m := _UNROLLED.match(name)) is not None:
            prefix, blocks, index, rest = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            stacked = arrays.get(f"{prefix}{blocks}{rest}")
            if stacked is not None and index < np.shape(stacked)[0]:
                out[name] = np.asarray(stacked)[index]
        elif (m := _STACKED.match(name)) is not None:
            prefix, blocks, rest = m.group(1), m.group(2), m.group(3)
            parts = []
            while (part := f"{prefix}{blocks}{len(parts)}/{rest}") in arrays:
                parts.append(np.asarray(arrays[part]))
            if parts:
                out[name] = np.stack(parts)
    return out


def _stage_layer(arrays: dict, out: dict, name: str, stage: str, part: str, rest: str) -> None:
    """``out[name]`` for a ResNet stage's block from the other layout, when the arrays have it."""
    if part == "first":
        source = arrays.get(f"{stage}0/{rest}")
        if source is not None:
            out[name] = np.asarray(source)
    elif part == "blocks":
        parts = []
        while (path := f"{stage}{len(parts) + 1}/{rest}") in arrays:
            parts.append(np.asarray(arrays[path]))
        if parts:
            out[name] = np.stack(parts)
    elif int(part) == 0:
        if (first := arrays.get(f"{stage}first/{rest}")) is not None:
            out[name] = np.asarray(first)
    elif (stacked := arrays.get(f"{stage}blocks/{rest}")) is not None and int(part) <= np.shape(stacked)[0]:
        out[name] = np.asarray(stacked)[int(part) - 1]


def _unrolled(path: str) -> bool:
    return bool(_UNROLLED.match(path) or _STAGE_UNROLLED.match(path))


def _stacked(path: str) -> bool:
    return bool(_STAGE_STACKED.match(path) or (_STACKED.match(path) and not _STAGE_UNROLLED.match(path)))


def layout_hint(saved: Iterable[str], new: Iterable[str]) -> str | None:
    """``model.scan_layers=<the saved layout>`` when a checkpoint with paths ``saved`` holds the
    model's blocks (paths ``new``) in the other layout; None when that is not what differs."""
    saved_only, new_only = set(saved) - set(new), set(new) - set(saved)
    if not saved_only or not new_only:
        return None
    saved_unrolled = all(map(_unrolled, saved_only)) and all(map(_stacked, new_only))
    saved_stacked = all(map(_stacked, saved_only)) and all(map(_unrolled, new_only))
    if saved_unrolled == saved_stacked:
        return None
    return f"model.scan_layers={'false' if saved_unrolled else 'true'}"
