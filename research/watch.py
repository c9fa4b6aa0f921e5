"""Training-health signals kept in the optimizer state: norms of gradients, parameters and updates.

:func:`watched` wraps an optimizer so that its state carries, per layer group (the first
component of a parameter's path: ``hidden``, ``head``, ``blocks``), the norms of the
gradient, of the parameters and of the update, for the engine to record at its log
interval (Levanter's ``WatchCallback``). Every task that steps its optimizer gets them
without code of its own.

Cost: the parameter and update norms are computed only on every ``every``-th update (the
log interval), under ``lax.cond``; the gradient norms on every update, because they also
watch for the first non-finite gradient (one reduction over the gradients, which the backward
pass has just written). When that happens, ``bad_update`` and ``bad_groups`` hold the update
and the groups where the current run of non-finite gradients began, so a stop on a NaN loss
can name them. Under ``jax.vmap`` (several seeds in one program) the condition is per
replica and both branches run: the norms are then computed on every update. The update is the
optimizer's: a learning-rate grid's per-replica factor (``engine/replicas.py``) comes after it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class HealthState(NamedTuple):
    count: jax.Array  # updates so far
    grad_norm: dict[str, jax.Array]  # per group, of the latest update
    param_norm: dict[str, jax.Array]  # per group, at the latest update on the interval
    update_norm: dict[str, jax.Array]  # per group, of that update
    bad_update: jax.Array  # the update where the current non-finite gradients began; 0: none
    bad_groups: dict[str, jax.Array]  # which groups' gradients were non-finite there


def group_of(path: tuple) -> str:
    """A parameter's layer group: the first component of its path (``hidden/0/kernel`` -> hidden)."""
    return jax.tree_util.keystr(path[:1], simple=True, separator="/")


def group_sq_norms(tree: Any, names: tuple[str, ...]) -> dict[str, jax.Array]:
    """Squared L2 norm of each group's leaves, in float32."""
    sums = {n: jnp.zeros((), jnp.float32) for n in names}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        sums[group_of(path)] += jnp.sum(jnp.square(leaf.astype(jnp.float32)))
    return sums


def groups(params: Any) -> tuple[str, ...]:
    """The layer groups of ``params``, in the order of their first leaf."""
    names = [group_of(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    return tuple(dict.fromkeys(names))


def watched(tx: optax.GradientTransformation, every: int) -> optax.GradientTransformation:
    """``tx`` whose state also holds the health signals, parameter and update norms every ``every``."""

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
        grad_sq = group_sq_norms(grads, names)
        bad = {n: ~jnp.isfinite(v) for n, v in grad_sq.items()}
        any_bad = jnp.any(jnp.stack(list(bad.values())))
        streak = health.bad_update > 0
        bad_update = jnp.where(any_bad, jnp.where(streak, health.bad_update, count), 0)
        bad_groups = {n: jnp.where(any_bad & streak, health.bad_groups[n], b) for n, b in bad.items()}

        def norms(_: Any) -> tuple[dict, dict]:
            if params is None:
                zero = {n: jnp.zeros((), jnp.float32) for n in names}
                return zero, zero
            p_sq, u_sq = group_sq_norms(params, names), group_sq_norms(updates, names)
            return _sqrt(p_sq), _sqrt(u_sq)

        param_norm, update_norm = jax.lax.cond(
            count % every == 0, norms, lambda _: (health.param_norm, health.update_norm), None
        )
        health = HealthState(count, _sqrt(grad_sq), param_norm, update_norm, bad_update, bad_groups)
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
