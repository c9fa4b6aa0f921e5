"""gymnax environments for the RL tasks, built from a ``conf/env/*.yaml`` config.

gymnax is imported inside ``make`` (it costs ~2.5 s), so importing this package is free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from research.envs.vec_env import VecEnv
from research.envs.wrappers import NormalizeObservation, ScaleReward
from research.errors import ConfigError

__all__ = ["make", "VecEnv", "NormalizeObservation", "ScaleReward"]


def make(cfg: Mapping[str, Any]) -> Any:
    """A ``VecEnv`` for ``cfg.id`` with ``cfg.params`` overrides, wrapped as the config asks.

    Keys: ``id`` (a gymnax id such as CartPole-v1), ``params`` (EnvParams fields to
    override), ``normalize_obs``, ``scale_reward`` and ``gamma`` (the discount of the
    return whose std scales rewards).
    """
    import gymnax

    env_id = cfg.get("id")
    if env_id not in gymnax.registered_envs:
        raise ConfigError(
            f"env.id={env_id!r} is not a gymnax environment; one of: {', '.join(gymnax.registered_envs)}"
        )
    env, params = gymnax.make(env_id)
    overrides = dict(cfg.get("params") or {})
    unknown = sorted(set(overrides) - set(params.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"env.params has no field {unknown[0]!r} for {env_id}; fields: "
            f"{', '.join(params.__dataclass_fields__)}"
        )
    venv: Any = VecEnv(env, params.replace(**overrides))
    if cfg.get("normalize_obs", False):
        venv = NormalizeObservation(venv)
    if cfg.get("scale_reward", False):
        venv = ScaleReward(venv, gamma=cfg["gamma"])
    return venv
