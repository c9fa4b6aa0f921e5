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
- ``ema``: ``{decay, debias}``, a Polyak average of the weights kept in the optimizer state
  (research/ema.py); evaluation, the best checkpoint and the reading commands use it
  (``trainer.eval_weights``). Null, or a null ``decay``: none.
- ``lora``: ``{rank, alpha, kernels, train}``, LoRA adapters on the kernels whose paths match
  ``kernels`` (research/models/lora.py): everything that is neither an adapter nor matched by
  ``train`` (a new head) is frozen as by ``freeze``, so only those carry optimizer state.
- ``groups``: named parameter groups, each ``{params: regex, lr_scale, learning_rate,
  schedule, unfreeze_at}`` with any but ``params`` left out. The first group whose regex a
  path matches owns it (frozen paths stay frozen); paths no group matches keep the top-level
  settings. Each group is its own optax chain (``optax.partition``): ``lr_scale`` multiplies
  the top-level schedule (big_vision's ``lr_mults``: a backbone at a tenth of the head's
  rate); ``learning_rate`` with ``schedule`` gives the group a schedule of its own;
  ``unfreeze_at``, a fraction of the run, holds its rate at 0 until then (gradual unfreezing;
  only ``freeze`` also keeps a part's batch-norm statistics, so a held group's keep moving).
- ``prune``: ``{sparsity, initial_sparsity, begin_step, end_step, frequency, scope, params}``,
  magnitude pruning on Zhu and Gupta's schedule, masks kept in the optimizer state and zeros in
  the parameters (research/prune.py). Null: none.

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

from research import ema, prune, targets, watch
from research.errors import ConfigError
from research.models import lora

FRAMEWORK_KEYS = (
    "learning_rate", "schedule", "clip_norm", "l1", "l2", "accumulate_steps", "freeze", "groups", "ema",
    "lora", "prune",
)  # fmt: skip
GROUP_KEYS = ("params", "lr_scale", "learning_rate", "schedule", "unfreeze_at")
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


def make_optimizer(
    cfg: Mapping[str, Any], total_updates: int, health: bool = False, blame: bool = False
) -> optax.GradientTransformation:
    """The optax transformation that ``cfg`` describes, for a run of ``total_updates`` calls to update.

    With ``accumulate_steps=k`` only every k-th call changes the parameters, so the
    schedule spans ``total_updates // k`` real updates. ``health``: keep the
    training-health signals (research/watch.py), measured on the steps the engine logs;
    ``blame``: check every update's gradients, to name where non-finite values began.
    """
    cfg = _plain(cfg)
    if "_target_" not in cfg:
        raise ConfigError("optimizer needs a _target_, e.g. optax.adam")
    accumulate = _int_at_least(cfg, "accumulate_steps", 1)
    updates = max(total_updates // accumulate, 1)
    groups = _groups(cfg)
    transforms = {TRAIN: _chain(cfg, updates)}
    for name, group in groups.items():
        transforms[name] = _chain(_group_config(cfg, name, group), updates, group)
    freeze = frozen(cfg)
    if freeze:
        transforms[FROZEN] = optax.set_to_zero()
    tx = transforms[TRAIN]
    if len(transforms) > 1:
        rules = {name: group["params"] for name, group in groups.items()}
        tx = optax.partition(transforms, path_labels(freeze, rules))
    pruning = prune.from_config(cfg.get("prune"), updates)
    if pruning is not None:  # the last word on the updates: the parameters land on the zeros
        tx = optax.chain(tx, pruning)
    average = ema.from_config(cfg.get("ema"))
    if average is not None:  # inside the accumulation: one average per real update
        tx = optax.chain(tx, average)
    if health:
        tx = watch.watched(tx, blame)
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate).gradient_transformation()
    return tx


def _chain(
    cfg: dict[str, Any], updates: int, group: Mapping[str, Any] | None = None
) -> optax.GradientTransformation:
    """Clipping, penalties and the base optimizer with ``cfg``'s schedule, scaled by the group's
    ``lr_scale`` and held at 0 until its ``unfreeze_at``."""
    schedule = make_schedule(cfg, updates)
    group = group or {}
    scale = group.get("lr_scale")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
            raise ConfigError(f"optimizer.groups lr_scale={scale!r} must be a number > 0")
        schedule = _scaled(schedule, float(scale))
    unfreeze_at = group.get("unfreeze_at")
    if unfreeze_at is not None:
        if (
            isinstance(unfreeze_at, bool)
            or not isinstance(unfreeze_at, int | float)
            or not 0 <= unfreeze_at < 1
        ):
            raise ConfigError(
                f"optimizer.groups unfreeze_at={unfreeze_at!r} must be a fraction of the run in [0, 1)"
            )
        schedule = _held(schedule, round(unfreeze_at * updates))
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
    return optax.chain(*parts, base)


def _groups(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``optimizer.groups`` checked: a mapping of names to groups with a ``params`` regex."""
    groups = cfg.get("groups") or {}
    if not isinstance(groups, Mapping):
        raise ConfigError("optimizer.groups must map group names to {params: regex, learning_rate: ...}")
    for name, group in groups.items():
        if name in (TRAIN, FROZEN) or not isinstance(group, Mapping) or "params" not in group:
            raise ConfigError(
                f"optimizer.groups.{name} needs a params regex (and a name other than {TRAIN!r}, {FROZEN!r})"
            )
        unknown = set(group) - set(GROUP_KEYS)
        if unknown:
            raise ConfigError(
                f"optimizer.groups.{name} has unknown keys {sorted(unknown)}; allowed: {list(GROUP_KEYS)}"
            )
    return {name: dict(group) for name, group in groups.items()}


def _scaled(schedule: optax.Schedule, scale: float) -> optax.Schedule:
    return lambda count: scale * schedule(count)


def _held(schedule: optax.Schedule, start: int) -> optax.Schedule:
    """0 before update ``start``, then ``schedule`` where the run is (not restarted)."""
    return lambda count: jnp.where(count < start, 0.0, schedule(count))


def _group_config(cfg: dict[str, Any], name: str, group: dict[str, Any]) -> dict[str, Any]:
    """The top-level config with the group's learning rate and schedule in place of its own."""
    if "learning_rate" in group and cfg.get("schedule") and "schedule" not in group:
        raise ConfigError(
            f"optimizer.groups.{name}.learning_rate needs a schedule of its own (the top-level schedule "
            f"holds the top-level rate): add groups.{name}.schedule, or scale the top level with lr_scale"
        )
    merged = {**cfg, **{k: group[k] for k in ("learning_rate", "schedule") if k in group}}
    try:
        _positive(merged, "learning_rate")
    except ConfigError as e:
        raise ConfigError(f"optimizer.groups.{name}: {e}") from None
    return merged


class OptimizerFactory:
    """``make_optimizer(cfg, total_updates)`` bound to its config and whether it keeps the health
    signals (``trainer.health``, ``trainer.blame_nonfinite``); tasks read ``freeze`` from it."""

    def __init__(self, cfg: Mapping[str, Any], health: bool = False, blame: bool = False):
        self.cfg = _plain(cfg)
        self.freeze = frozen(self.cfg)
        prune.check(self.cfg.get("prune"))
        self.health, self.blame = health, blame

    def __call__(self, total_updates: int) -> optax.GradientTransformation:
        return make_optimizer(self.cfg, total_updates, self.health, self.blame)


def frozen(cfg: Mapping[str, Any]) -> list[str]:
    """``optimizer.freeze`` plus, with ``optimizer.lora``, every path but the adapters and ``train``."""
    return [*(cfg.get("freeze") or []), *lora.frozen_patterns(cfg.get("lora"))]


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


def _compile(key: str, pattern: Any) -> re.Pattern:
    """``pattern`` compiled; a ConfigError naming ``optimizer.<key>`` when it is not a regex."""
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as e:
        raise ConfigError(f"optimizer.{key}={pattern!r} holds an invalid regex: {e}") from None


def path_labels(freeze: Sequence[str], groups: Mapping[str, str] = ()) -> Callable[[Any], Any]:
    """A labelling function for ``optax.partition``: FROZEN where a freeze pattern matches the
    path, else the first group whose ``params`` regex matches, else TRAIN. A pattern that matches
    no parameter is a ConfigError (a typo would silently train everything)."""
    rules = [(FROZEN, _compile("freeze", p), f"freeze pattern {p!r}") for p in freeze]
    rules += [
        (n, _compile(f"groups.{n}.params", p), f"groups.{n}.params {p!r}") for n, p in dict(groups).items()
    ]

    def labels(params: Any) -> Any:
        paths = [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
        for _, regex, what in rules:
            if not any(regex.search(p) for p in paths):
                raise ConfigError(f"optimizer.{what} matches no parameter; paths look like {paths[0]!r}")

        def label(path: tuple, _: Any) -> str:
            name = param_path(path)
            return next((label for label, regex, _ in rules if regex.search(name)), TRAIN)

        return jax.tree_util.tree_map_with_path(label, params)

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
