"""A search space written as Hydra sweep expressions, as Optuna distributions, and back to overrides.

optimizer.learning_rate: tag(log, interval(1e-4, 3e-2))   -> FloatDistribution(log=True)
data.batch_size: choice(16, 32, 64, 128)                   -> CategoricalDistribution
model.depth: range(1, 5)                                   -> IntDistribution(1, 4)
model.width: tag(log, int(interval(32, 1024)))             -> IntDistribution(log=True)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from research.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

PLAIN_STRING = re.compile(r"[A-Za-z_][\w./-]*")


def split_arguments(
    params: Mapping[str, str], arguments: Sequence[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """(searched keys -> distributions, fixed overrides) from ``hydra.sweeper.params`` and the command line.

    A sweep expression on the command line (``optimizer.learning_rate='interval(1e-4,1e-2)'``)
    is searched too, and replaces the config's entry for that key; other overrides reach every trial.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for line in [f"{k}={v}" for k, v in _flat(params).items()] + list(arguments):
        override = parser.parse_override(line)
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(key, override)
        else:
            fixed.append(line)
    if not space:
        raise ConfigError("an Optuna search needs hydra.sweeper.params: a key and a range to search")
    return space, fixed


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys: ``hydra.sweeper.params.model.width=...`` on the command line nests the key."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def distribution(key: str, override: Any) -> BaseDistribution:
    """The Optuna distribution of one parsed sweep override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep():
        return CategoricalDistribution(list(override.sweep_iterator()))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in values) and len(values) > 1:
            return IntDistribution(values[0], values[-1], step=values[1] - values[0])
        return CategoricalDistribution(values)
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"hydra.sweeper.params.{key}: use choice(...), range(...) or interval(...)")


def encode(value: Any) -> str:
    """A sampled value as the text of a Hydra override (strings quoted where the grammar needs it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        if PLAIN_STRING.fullmatch(value) and value.lower() not in ("true", "false", "null"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(value)


def overrides(params: Mapping[str, Any]) -> list[str]:
    return [f"{key}={encode(value)}" for key, value in params.items()]


def check_search(sweeper: Mapping[str, Any]) -> None:
    """Raise ConfigError naming the first ``hydra.sweeper`` value an Optuna search cannot use."""
    if sweeper.get("direction") not in ("maximize", "minimize"):
        direction = sweeper.get("direction")
        raise ConfigError(f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}")
    for key, least in (("n_trials", 1), ("n_jobs", 1), ("max_resamples", 0)):
        value = sweeper.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"hydra.sweeper.{key} must be an integer >= {least}, got {value!r}")
    if not sweeper.get("study_name"):
        raise ConfigError("hydra.sweeper.study_name must name the study (e.g. ${name}_tpe)")
    for part in ("sampler", "pruner"):
        _check_target(part, sweeper.get(part))
    split_arguments(sweeper.get("params") or {}, [])


def _check_target(part: str, node: Any) -> None:
    import importlib

    target = str(node.get("_target_") if isinstance(node, Mapping) else None)
    module, _, name = target.rpartition(".")
    try:
        getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"hydra.sweeper.{part}._target_={target!r} cannot be imported: see conf/hydra/sweeper/{part}/"
        ) from None


OPTUNA_SWEEPER = "hydra_plugins.research_optuna_sweeper.sweeper.OptunaSweeper"


def check_sweeper(sweeper: Mapping[str, Any]) -> None:
    """``check_search`` for the project's Optuna sweeper; other sweepers (Hydra's grid) pass."""
    if sweeper.get("_target_") == OPTUNA_SWEEPER:
        check_search(sweeper)
