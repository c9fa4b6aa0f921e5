"""The device mesh and where every array of a run lives on it.

jit with shardings over a named mesh is the pjit model: one program for the whole
mesh, and the compiler (GSPMD) inserts the collectives that the shardings imply.
It replaces pmap: pmap could only split the batch over one device axis and kept a
full copy of the state on every device, whereas here the same train step runs
data-parallel, FSDP (parameters and optimizer state split over ``fsdp``) or
tensor-parallel (layers split over ``tensor``) by changing shardings alone, over
devices of one process or of many.

The mesh has three named axes, ``data``, ``fsdp`` and ``tensor``. Batches are
split over ``data`` and ``fsdp``. State leaves follow partition rules: an ordered
list of ``[regex, spec]`` pairs; the first regex found in a leaf's path (such as
``params/hidden/0/kernel`` or ``opt_state/0/0/mu/hidden/0/kernel``) decides:

- spec a list: a PartitionSpec, one entry per dimension (an axis name, a list of
  axis names, or null), aligned with the *last* dimensions as in numpy
  broadcasting, so ``[null, tensor]`` splits the output features of both a Dense
  kernel (in, out) and a Conv kernel (h, w, in, out);
- spec an axis name: split the largest dimension that the axis size divides (the
  FSDP rule of big_vision), or replicate the leaf when none does;
- spec null: replicate (to exempt leaves from a later catch-all rule).

Leaves no rule matches are replicated. No model needs changes for any of this.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from research.errors import ConfigError
from research.optim import param_path

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # a batch is split over both: FSDP is data parallelism too

Rule = tuple[str, Any]


def mesh_shape(sizes: dict[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolve one -1 to "the rest of the devices" and check the product."""
    shape = [int(sizes.get(axis, 1)) for axis in AXES]
    if shape.count(-1) > 1:
        raise ConfigError("mesh: only one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if any(s == 0 or s < -1 for s in shape) or num_devices % known:
        raise ConfigError(f"mesh {dict(zip(AXES, shape, strict=True))} does not fit {num_devices} devices")
    shape = [num_devices // known if s == -1 else s for s in shape]
    if int(np.prod(shape)) != num_devices:
        sizes = dict(zip(AXES, shape, strict=True))
        raise ConfigError(f"mesh {sizes} uses {np.prod(shape)} of {num_devices} devices")
    return tuple(shape)


def make_mesh(sizes: dict[str, Any], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over ``devices`` (default: every device of every process).

    Axes are Auto (the compiler propagates shardings), and ``jax.make_mesh`` orders
    the devices by the hardware topology, so neighbours on the ``tensor`` axis share
    the fastest links.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, shape: Sequence[int], axis: int) -> NamedSharding:
    """Dimension ``axis`` of an array of ``shape`` (the batch) split over ``data`` and ``fsdp``."""
    ways = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    if shape[axis] % ways:
        raise ConfigError(
            f"a batch of {shape[axis]} does not split over mesh.data * mesh.fsdp = {ways} "
            f"devices: make data.batch_size and data.eval_batch_size multiples of {ways}"
        )
    return NamedSharding(mesh, P(*([None] * axis), BATCH_AXES))


def compile_rules(rules: Sequence[Sequence[Any]] | None) -> list[tuple[re.Pattern, Any]]:
    """Check the ``mesh.rules`` list once: valid regexes, and specs that name mesh axes."""
    compiled = []
    for rule in rules or []:
        if not isinstance(rule, (list, tuple)) or len(rule) != 2:
            raise ConfigError(f"mesh.rules entry {rule!r} must be a pair [regex, spec]")
        pattern, spec = rule
        try:
            regex = re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ConfigError(f"mesh.rules regex {pattern!r} is invalid: {e}") from None
        names = [spec] if isinstance(spec, str) else [n for e in spec or [] for n in _names(e)]
        unknown = [n for n in names if n not in AXES]
        if unknown or (spec is not None and not isinstance(spec, (str, list, tuple))):
            raise ConfigError(f"mesh.rules spec {spec!r} for {pattern!r} must name axes of {', '.join(AXES)}")
        compiled.append((regex, spec))
    return compiled


def _names(entry: Any) -> list[str]:
    if entry is None:
        return []
    return [entry] if isinstance(entry, str) else list(entry)


def leaf_spec(path: str, shape: Sequence[int], rules: list[tuple[re.Pattern, Any]], mesh: Mesh) -> P:
    """The PartitionSpec of one leaf: the first matching rule's, or replicated."""
    for regex, spec in rules:
        if regex.search(path):
            if spec is None:
                return P()
            if isinstance(spec, str):
                return _largest_divisible(shape, spec, mesh.shape[spec])
            return _aligned(path, shape, list(spec), mesh)
    return P()


def _largest_divisible(shape: Sequence[int], axis: str, size: int) -> P:
    dims = [d for d in np.argsort(shape, kind="stable")[::-1] if shape[d] % size == 0]
    if not dims or size == 1:
        return P()
    entries: list[Any] = [None] * len(shape)
    entries[int(dims[0])] = axis
    return P(*entries)


def _aligned(path: str, shape: Sequence[int], spec: list[Any], mesh: Mesh) -> P:
    if len(spec) > len(shape):
        raise ConfigError(f"mesh.rules spec {spec} has more entries than {path} {tuple(shape)} has dims")
    entries = [None] * (len(shape) - len(spec)) + [tuple(e) if isinstance(e, list) else e for e in spec]
    for dim, entry in zip(shape, entries, strict=True):
        ways = int(np.prod([mesh.shape[n] for n in _names(entry)]))
        if dim % ways:
            raise ConfigError(
                f"mesh.rules: {path} {tuple(shape)} cannot split a dimension of {dim} "
                f"{ways} ways over {entry}: change the rule or the mesh sizes"
            )
    return P(*entries)


def state_shardings(
    mesh: Mesh, abstract_state: Any, rules: Sequence[Sequence[Any]] | None = None, leading_axes: int = 0
) -> Any:
    """A NamedSharding for every leaf of the train state, from the partition rules.

    ``leading_axes`` counts axes in front of each leaf's own shape (the replica axis
    of several seeds in one program); they stay unsplit.
    """
    compiled = compile_rules(rules)

    def sharding(path: tuple, leaf: Any) -> NamedSharding:
        shape = tuple(leaf.shape)[leading_axes:]
        spec = leaf_spec(param_path(path), shape, compiled, mesh)
        return NamedSharding(mesh, P(*([None] * leading_axes), *spec))

    return jax.tree_util.tree_map_with_path(sharding, abstract_state)
