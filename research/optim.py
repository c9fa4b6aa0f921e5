"""Optax optimizers built from the ``optimizer`` config group.

The config names an optax function by ``_target_`` (``optax.sgd``, ``optax.adam``,
``optax.adamw``, ``optax.rmsprop``); its keys go to that function, except the
framework keys below, which wrap it in an optax chain:

- ``learning_rate``: the peak learning rate; schedules interpolate it (``${..learning_rate}``).
- ``schedule``: a nested config with its own ``_target_`` (an optax schedule, or
  ``multistep_schedule`` below). A null ``decay_steps``/``transition_steps``/``total_steps``
  means the whole run and is filled from the number of optimizer updates.
- ``clip_norm``: clip gradients to this global norm first (null: no clipping).
- ``l1``, ``l2``: penalties ``l1 * |w|`` and ``l2 / 2 * w^2`` added to the loss, i.e. their
  gradients added before the optimizer (coupled). Decoupled weight decay is adamw's own
  ``weight_decay``.
- ``accumulate_steps``: average gradients over k calls and update once (``optax.MultiSteps``).
- ``freeze``: regexes searched in parameter paths such as ``hidden/0/kernel``; matched
  parameters get zero updates (``optax.partition`` with ``optax.set_to_zero``), and tasks
  keep the matching batch-norm statistics too (``keep_frozen``), e.g. for transfer learning.

A schedule's ``warmup_steps`` below 1 is a fraction of the run, so one recipe fits any
length (``trainer.epochs=1`` included). ``_target_`` names resolve through
``research.targets``: nothing here needs Hydra.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from research import targets
from research.errors import ConfigError

FRAMEWORK_KEYS = ("learning_rate", "schedule", "clip_norm", "l1", "l2", "accumulate_steps", "freeze")
# Schedule keys where null = the whole run.
RUN_LENGTH_KEYS = ("decay_steps", "transition_steps", "total_steps")
TRAIN, FROZEN = "train", "frozen"


def make_schedule(cfg: Mapping[str, Any], total_updates: int) -> optax.Schedule:
    """The learning-rate schedule of ``cfg`` over ``total_updates`` optimizer updates."""
    cfg = _plain(cfg)
    learning_rate = _positive(cfg, "learning_rate")
    schedule = cfg.get("schedule")
    if schedule is None:
        return optax.constant_schedule(learning_rate)
    schedule = {k: total_updates if k in RUN_LENGTH_KEYS and v is None else v for k, v in schedule.items()}
    warmup = schedule.get("warmup_steps")
    if isinstance(warmup, float) and 0 < warmup < 1:  # a fraction of the schedule's length
        schedule["warmup_steps"] = warmup = max(1, round(warmup * schedule.get("decay_steps", total_updates)))
    decay = schedule.get("decay_steps")
    if isinstance(warmup, int) and isinstance(decay, int) and warmup >= decay:
        raise ConfigError(
            f"optimizer.schedule.warmup_steps={warmup} must be below decay_steps={decay} (this run makes "
            f"{total_updates} optimizer updates): lower it or use optimizer/schedule=constant"
        )
    fn = targets.call("optimizer.schedule", schedule)
    if not callable(fn):
        target = schedule.get("_target_")
        raise ConfigError(f"optimizer.schedule._target_={target!r} is not an optax schedule")
    return fn


def multistep_schedule(
    init_value: float, total_steps: int, milestones: Sequence[float], factor: float
) -> optax.Schedule:
    """PyTorch's MultiStepLR with milestones as fractions of the run: ``init_value``, times
    ``factor`` after each milestone (ResNet's recipe: x0.1 at 50% and 75% of training).
    """
    if not all(0 < m < 1 for m in milestones) or list(milestones) != sorted(milestones):
        raise ConfigError(
            f"optimizer.schedule.milestones={list(milestones)} must be increasing fractions "
            "of the run, in (0, 1)"
        )
    boundaries: dict[int, float] = {}
    for m in milestones:  # milestones that round to one step (a short run) compound there
        step = round(m * total_steps)
        boundaries[step] = boundaries.get(step, 1.0) * factor
    return optax.piecewise_constant_schedule(init_value, boundaries)


def make_optimizer(cfg: Mapping[str, Any], total_updates: int) -> optax.GradientTransformation:
    """The optax transformation that ``cfg`` describes, for a run of ``total_updates`` calls to update.

    With ``accumulate_steps=k`` only every k-th call changes the parameters, so the
    schedule spans ``total_updates // k`` real updates.
    """
    cfg = _plain(cfg)
    if "_target_" not in cfg:
        raise ConfigError("optimizer needs a _target_, e.g. optax.adam")
    accumulate = _int_at_least(cfg, "accumulate_steps", 1)
    schedule = make_schedule(cfg, max(total_updates // accumulate, 1))
    kwargs = {k: v for k, v in cfg.items() if k not in FRAMEWORK_KEYS}
    base = targets.call("optimizer", kwargs, learning_rate=schedule)
    if not isinstance(base, optax.GradientTransformation):
        raise ConfigError(f"optimizer._target_={cfg['_target_']!r} does not return an optax optimizer")

    parts = []
    clip_norm = cfg.get("clip_norm")
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(_positive(cfg, "clip_norm")))
    l1, l2 = _non_negative(cfg, "l1"), _non_negative(cfg, "l2")
    if l1:
        parts.append(add_l1_penalty(l1))
    if l2:
        parts.append(optax.add_decayed_weights(l2))
    tx = optax.chain(*parts, base)

    freeze = cfg.get("freeze") or []
    if freeze:
        tx = optax.partition({TRAIN: tx, FROZEN: optax.set_to_zero()}, freeze_labels(freeze))
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate).gradient_transformation()
    return tx


class OptimizerFactory:
    """``make_optimizer(cfg, total_updates)`` bound to its config; tasks read ``freeze`` from it."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = _plain(cfg)
        self.freeze = list(self.cfg.get("freeze") or [])

    def __call__(self, total_updates: int) -> optax.GradientTransformation:
        return make_optimizer(self.cfg, total_updates)


def keep_frozen(new: Any, old: Any, patterns: Sequence[str]) -> Any:
    """``new`` with the leaves whose path matches a freeze pattern taken from ``old``.

    For model state that is not trained by gradients (batch-norm statistics): a frozen
    part of the network must keep them as they were.
    """
    if not patterns:
        return new
    compiled = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(
        lambda p, n, o: o if any(r.search(param_path(p)) for r in compiled) else n, new, old
    )


def add_l1_penalty(strength: float) -> optax.GradientTransformation:
    """Adds ``strength * sign(w)``, the subgradient of ``strength * |w|``, to each gradient."""

    def update(updates: Any, params: Any) -> Any:
        return jax.tree.map(lambda g, w: g + strength * jnp.sign(w), updates, params)

    return optax.stateless(update)


def param_path(path: tuple) -> str:
    """``hidden/0/kernel`` for a pytree key path (NNX Variables' trailing ``value`` dropped)."""
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    return name.removesuffix("/value")


def freeze_labels(patterns: list[str]) -> Callable[[Any], Any]:
    """A labelling function for ``optax.multi_transform``: FROZEN where a pattern matches the path."""
    try:
        compiled = [re.compile(p) for p in patterns]
    except (re.error, TypeError) as e:
        raise ConfigError(f"optimizer.freeze={patterns} holds an invalid regex: {e}") from None

    def labels(params: Any) -> Any:
        paths = [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        for regex in compiled:
            if not any(regex.search(p) for p in paths):
                raise ConfigError(
                    f"optimizer.freeze pattern {regex.pattern!r} matches no parameter; "
                    f"paths look like {paths[0]!r}"
                )
        return jax.tree_util.tree_map_with_path(
            lambda p, _: FROZEN if any(r.search(param_path(p)) for r in compiled) else TRAIN, params
        )

    return labels


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-dict copy (the build step hands resolved plain containers)."""
    return copy.deepcopy(dict(cfg))


def _number(cfg: dict[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"optimizer.{key} must be a number, got {value!r}")
    return float(value)


def _positive(cfg: dict[str, Any], key: str) -> float:
    if key not in cfg:
        raise ConfigError(f"optimizer.{key} is missing")
    value = _number(cfg, key, 0.0)
    if not value > 0:
        raise ConfigError(f"optimizer.{key} must be > 0, got {value}")
    return value


def _non_negative(cfg: dict[str, Any], key: str) -> float:
    value = _number(cfg, key, 0.0)
    if value < 0:
        raise ConfigError(f"optimizer.{key} must be >= 0, got {value}")
    return value


def _int_at_least(cfg: dict[str, Any], key: str, low: int) -> int:
    value = cfg.get(key, low)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"optimizer.{key} must be an integer >= {low}, got {value!r}")
    return value
