"""Training-health signals kept in the optimizer state: norms of gradients, parameters and updates.

:func:`watched` wraps an optimizer so that its state carries, per layer group (the first
component of a parameter's path: ``hidden``, ``head``, ``blocks``), the norms of the
gradient, of the parameters and of the update, for the engine to record at its log
interval (Levanter's ``WatchCallback``). Every task that steps its optimizer gets them
without code of its own.

Cost: the norms are computed only on the steps the engine measures, the last of each dispatch
of K steps (``engine/steps.py`` traces it apart from the ``lax.scan`` over the others, inside
``call_position``): the other steps carry no code for them, not even a ``lax.cond``, which on
XLA's CPU backend makes the update leave its fused loop (+10-30% on a small model) and under
``jax.vmap`` (several seeds in one program) would turn into a select that runs both branches.
Outside such a scope (an optimizer stepped by hand) every update measures. With ``blame``
(``trainer.blame_nonfinite``) every update also checks its gradients for non-finite values (one
sum per parameter, the cheapest reduction, yet +10-25% on a small dense model): when one
appears, ``bad_update`` and ``bad_groups`` hold the update and the groups where the current run
of non-finite gradients began, so a stop on a NaN loss can name them. It is a switch because a
NaN reaches every group within one update: only a check of every update can say which was first.
The update is the optimizer's: a learning-rate grid's per-replica factor (``engine/replicas.py``)
comes after it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from research import call_position


class HealthState(NamedTuple):
    count: jax.Array  # updates so far
    grad_norm: dict[str, jax.Array]  # per group, of the latest update measured
    param_norm: dict[str, jax.Array]  # per group, that update's starting parameters
    update_norm: dict[str, jax.Array]  # per group, of that update
    bad_update: jax.Array  # the update where the current non-finite gradients began; 0: none
    bad_groups: dict[str, jax.Array]  # which groups' gradients were non-finite there


def group_of(path: tuple) -> str:
    """A parameter's layer group: the first component of its path (``hidden/0/kernel`` -> hidden)."""
    return jax.tree_util.keystr(path[:1], simple=True, separator="/")


def _sum(x: jax.Array) -> jax.Array:
    """The sum of ``x`` in float32, one axis at a time from the last: XLA's CPU reduction of
    the minor axis is vectorised, and ~3x quicker than one reduction over all axes at once."""
    x = x.astype(jnp.float32)
    for _ in range(x.ndim):
        x = jnp.sum(x, axis=-1)
    return x


def group_sq_norms(tree: Any, names: tuple[str, ...]) -> dict[str, jax.Array]:
    """Squared L2 norm of each group's leaves, in float32."""
    sums = {n: jnp.zeros((), jnp.float32) for n in names}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        sums[group_of(path)] += _sum(jnp.square(leaf.astype(jnp.float32)))
    return sums


def group_finite(tree: Any, names: tuple[str, ...]) -> dict[str, jax.Array]:
    """Whether each group's leaves are finite: whether their sum is (a NaN or an infinity
    carries through it; finite values beyond float32's range would read as infinite)."""
    sums = {n: jnp.zeros((), jnp.float32) for n in names}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        sums[group_of(path)] += _sum(leaf)
    return {n: jnp.isfinite(v) for n, v in sums.items()}


def groups(params: Any) -> tuple[str, ...]:
    """The layer groups of ``params``, in the order of their first leaf."""
    names = [group_of(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    return tuple(dict.fromkeys(names))


def watched(tx: optax.GradientTransformation, blame: bool = False) -> optax.GradientTransformation:
    """``tx`` whose state also holds the health signals of the updates the engine measures (and,
    with ``blame``, where non-finite gradients began)."""

    def init(params: Any) -> tuple[Any, HealthState]:
        names = groups(params)

        def zeros(dtype: Any = jnp.float32) -> dict[str, jax.Array]:  # own buffers: the state is donated
            return {n: jnp.zeros((), dtype) for n in names}

        state = HealthState(
            jnp.zeros((), jnp.int32), zeros(), zeros(), zeros(), jnp.zeros((), jnp.int32), zeros(bool)
        )
        return tx.init(params), state

    def update(grads: Any, state: tuple[Any, HealthState], params: Any = None) -> tuple[Any, tuple]:
        inner, health = state
        updates, inner = tx.update(grads, inner, params)
        names = tuple(health.grad_norm)
        count = health.count + 1
        bad_update, bad_groups = health.bad_update, health.bad_groups
        if blame:
            bad = {n: ~ok for n, ok in group_finite(grads, names).items()}
            any_bad = jnp.any(jnp.stack(list(bad.values())))
            streak = health.bad_update > 0
            bad_update = jnp.where(any_bad, jnp.where(streak, health.bad_update, count), 0)
            bad_groups = {n: jnp.where(any_bad & streak, health.bad_groups[n], b) for n, b in bad.items()}

        if call_position.current() == 0:  # a scanned step: the call's last one measures
            grad_norm, param_norm, update_norm = health.grad_norm, health.param_norm, health.update_norm
        else:
            zero = {n: jnp.zeros((), jnp.float32) for n in names}
            grad_norm = _sqrt(group_sq_norms(grads, names))
            param_norm = zero if params is None else _sqrt(group_sq_norms(params, names))
            update_norm = zero if params is None else _sqrt(group_sq_norms(updates, names))
        health = HealthState(count, grad_norm, param_norm, update_norm, bad_update, bad_groups)
        return updates, (inner, health)

    return optax.GradientTransformation(init, update)


def _sqrt(sq: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {n: jnp.sqrt(v) for n, v in sq.items()}


def is_health(node: Any) -> bool:
    return isinstance(node, HealthState)


def find(tree: Any) -> HealthState | None:
    """The first health state held in ``tree`` (an optimizer state), or None."""
    found = [n for n in jax.tree.leaves(tree, is_leaf=is_health) if is_health(n)]
    return found[0] if found else None
