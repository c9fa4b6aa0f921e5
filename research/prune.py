"""Magnitude pruning with a polynomial sparsity schedule, kept in the optimizer state.

``optimizer.prune: {sparsity, initial_sparsity, begin_step, end_step, frequency, scope, params}``
chains :func:`magnitude_prune` after the optimizer, so every task that updates its model with
its optimizer can be pruned with no code of its own (Zhu and Gupta 2017, "To prune, or not to
prune"). The sparsity of optimizer update t rises from ``initial_sparsity`` to ``sparsity``
between ``begin_step`` and ``end_step`` as

    s_t = s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin)) ** 3

and every ``frequency`` updates in that window the masks are recomputed: the smallest weights by
magnitude of each matched kernel (``scope: layer``) or of all of them together (``scope:
global``) are masked. The masks live in the optimizer state (checkpointed and resumed with it);
the transform returns the update that lands the parameters on ``mask * (w + update)``, so the
parameters themselves hold the zeros and checkpoints, ``research.export`` and every reading
command see the pruned model. A masked weight stays masked (its magnitude counts as 0 at the
next recomputation), as in the paper.

A begin or end written as a float up to 1.0 is a fraction of the run's optimizer updates (an
integer is an update count), so one recipe fits any length.
The transform must be the last to touch the updates: a learning-rate grid's per-replica factor
(``engine/replicas.py``) would scale the step onto the zeros, so the two do not combine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.errors import ConfigError

KEYS = ("sparsity", "initial_sparsity", "begin_step", "end_step", "frequency", "scope", "params")
SCOPES = ("layer", "global")
ALL = "all"  # the key of the sparsity over every pruned parameter
POWER = 3  # Zhu and Gupta's cubic: prune fast while redundancy is high, slowly near the target


class PruneState(NamedTuple):
    count: jax.Array  # optimizer updates so far
    masks: dict[str, Any]  # nested like the parameters, pruned ones only (``conv/0/kernel``): True = kept


class Settings(NamedTuple):
    sparsity: float
    initial_sparsity: float
    begin: int
    end: int
    frequency: int
    scope: str
    params: tuple[str, ...]


def sparsity_at(settings: Settings, step: Any) -> Any:
    """The schedule's target sparsity at optimizer update ``step`` (numpy or jax scalars)."""
    begin, end = settings.begin, settings.end
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / max(end - begin, 1), 0.0, 1.0)
    final, initial = settings.sparsity, settings.initial_sparsity
    return final + (initial - final) * (1.0 - progress) ** POWER


def param_path(path: tuple) -> str:
    """``conv/0/kernel`` for a pytree key path (NNX Variables' trailing ``value`` dropped)."""
    return jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")


def pruned_paths(params: Any, patterns: tuple[str, ...]) -> list[str]:
    """The paths of ``params`` that a pattern matches; a ConfigError when none does (a typo)."""
    compiled = [re.compile(p) for p in patterns]
    paths = [param_path(p) for p, leaf in jax.tree_util.tree_leaves_with_path(params) if np.ndim(leaf) > 1]
    matched = [p for p in paths if any(r.search(p) for r in compiled)]
    if not matched:
        raise ConfigError(
            f"optimizer.prune.params={list(patterns)} matches no parameter of two or more dimensions; "
            f"paths look like {paths[0] if paths else '(none)'!r}"
        )
    return matched


def _flat(tree: Any) -> dict[str, Any]:
    return {param_path(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"conv/0/kernel": x}`` as ``{"conv": {"0": {"kernel": x}}}``: the masks' paths in the state
    end as their parameters' do (sharding rules and checkpoints treat them alike)."""
    nested: dict[str, Any] = {}
    for path, leaf in flat.items():
        *parents, last = path.split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return nested


def _masks(scores: dict[str, jax.Array], sparsity: jax.Array, scope: str) -> dict[str, jax.Array]:
    """Keep-masks that drop the ``sparsity`` fraction of the smallest scores, per layer or globally."""

    def threshold(values: jax.Array) -> jax.Array:
        flat = jnp.sort(values.reshape(-1))
        k = jnp.floor(sparsity * flat.size).astype(jnp.int32)  # how many to drop
        return jnp.where(k > 0, flat[jnp.maximum(k - 1, 0)], -jnp.inf)

    if scope == "global":
        cut = threshold(jnp.concatenate([s.reshape(-1) for s in scores.values()]))
        return {p: s > cut for p, s in scores.items()}
    return {p: s > threshold(s) for p, s in scores.items()}


def magnitude_prune(settings: Settings) -> optax.GradientTransformation:
    """Mask the smallest weights on the schedule of ``settings``; the parameters hold the zeros."""

    def init(params: Any) -> PruneState:
        paths = pruned_paths(params, settings.params)
        leaves = _flat(params)
        masks = {p: jnp.ones(leaves[p].shape, bool) for p in paths}
        return PruneState(jnp.zeros((), jnp.int32), _nest(masks))

    def update(updates: Any, state: PruneState, params: Any = None) -> tuple[Any, PruneState]:
        if params is None:
            raise ValueError("optimizer.prune needs the parameters: call tx.update(grads, state, params)")
        step, old = state.count, _flat(state.masks)
        flat_params, flat_updates = _flat(params), _flat(updates)
        moved = {p: flat_params[p] + flat_updates[p] for p in old}
        on_beat = ((step - settings.begin) % settings.frequency == 0) | (step == settings.end)
        due = (step >= settings.begin) & (step <= settings.end) & on_beat

        def recompute(_: Any) -> dict[str, jax.Array]:
            scores = {p: jnp.abs(moved[p]).astype(jnp.float32) * old[p] for p in moved}
            return _masks(scores, sparsity_at(settings, step), settings.scope)

        masks = jax.lax.cond(due, recompute, lambda _: old, None)

        def landed(path: tuple, w: jax.Array, u: jax.Array) -> jax.Array:
            name = param_path(path)
            if name not in masks:
                return u
            return (jnp.where(masks[name], moved[name], 0) - w).astype(u.dtype)

        out = jax.tree_util.tree_map_with_path(landed, params, updates)
        return out, PruneState(step + 1, _nest(masks))

    return optax.GradientTransformation(init, update)


def settings_from_config(cfg: Any, total_updates: int) -> Settings | None:
    """``optimizer.prune`` checked, with fractions of the run turned into update counts; None: off."""
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping) or set(cfg) - set(KEYS):
        raise ConfigError(f"optimizer.prune must be null or a mapping with keys {list(KEYS)}, got {cfg!r}")
    sparsity = _fraction(cfg, "sparsity", None)
    initial = _fraction(cfg, "initial_sparsity", 0.0)
    if initial > sparsity:
        raise ConfigError(f"optimizer.prune.initial_sparsity={initial} must not exceed sparsity={sparsity}")
    begin, end = _step(cfg, "begin_step", total_updates), _step(cfg, "end_step", total_updates)
    if not begin < end:
        raise ConfigError(
            f"optimizer.prune.begin_step ({begin} updates) must come before end_step ({end} updates of "
            f"{total_updates}): floats up to 1.0 are fractions of the run"
        )
    frequency = cfg.get("frequency", 1)
    if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
        raise ConfigError(f"optimizer.prune.frequency={frequency!r} must be an integer >= 1 (updates)")
    scope = cfg.get("scope", "layer")
    if scope not in SCOPES:
        raise ConfigError(f"optimizer.prune.scope={scope!r} must be one of {list(SCOPES)}")
    params = cfg.get("params", ["kernel"])
    if isinstance(params, str) or not params:
        raise ConfigError(f"optimizer.prune.params={params!r} must be a list of regexes, e.g. [kernel]")
    for p in params:
        try:
            re.compile(p)
        except (re.error, TypeError) as e:
            raise ConfigError(f"optimizer.prune.params holds an invalid regex {p!r}: {e}") from None
    return Settings(sparsity, initial, begin, end, frequency, scope, tuple(params))


def check(cfg: Any) -> None:
    """``optimizer.prune`` checked before anything runs (the run length itself is not yet known)."""
    settings_from_config(cfg, 1_000_000)


def from_config(cfg: Any, total_updates: int) -> optax.GradientTransformation | None:
    """The pruning ``optimizer.prune`` asks for over a run of ``total_updates``; null: none."""
    settings = settings_from_config(cfg, total_updates)
    return None if settings is None else magnitude_prune(settings)


def _fraction(cfg: Mapping[str, Any], key: str, default: float | None) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(
            f"optimizer.prune.{key}={value!r} must be a fraction in [0, 1), e.g. 0.9 for 90% zeros"
        )
    return float(value)


def _step(cfg: Mapping[str, Any], key: str, total_updates: int) -> int:
    value = cfg.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"optimizer.prune.{key}={value!r} must be an update count or a fraction of the run")
    if isinstance(value, float) and value <= 1:
        return round(value * total_updates)
    return int(value)


def is_pruning(node: Any) -> bool:
    return isinstance(node, PruneState)


def find(tree: Any) -> PruneState | None:
    """The first pruning state held in ``tree`` (an optimizer state), or None."""
    found = [n for n in jax.tree.leaves(tree, is_leaf=is_pruning) if is_pruning(n)]
    return found[0] if found else None


def sparsity(state: PruneState) -> dict[str, np.ndarray]:
    """The fraction of masked weights per pruned parameter, and over all of them as ``all``
    (per replica when the state is stacked over replicas)."""
    masks = {p: np.asarray(m) for p, m in _flat(jax.device_get(state.masks)).items()}
    batch = np.asarray(jax.device_get(state.count)).shape  # () or (replicas,)
    out, zeros, total = {}, 0, 0
    for path, mask in masks.items():
        flat = mask.reshape(*batch, -1)
        out[path] = 1.0 - flat.mean(axis=-1)
        zeros, total = zeros + (~flat).sum(axis=-1), total + flat.shape[-1]
    out[ALL] = zeros / total
    return out
