"""Optional layers over a ``VecEnv``: observation normalisation and reward scaling.

Both keep running statistics over all copies in their part of the env state, so
the statistics are checkpointed with the rest of the training state. Evaluation
starts fresh episodes with the training statistics (``reset(..., stats_from=)``)
and leaves them alone (``step(..., update_stats=False)``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from research.envs.vec_env import StepResult

# Numerical guards, as in gym's VecNormalize: a prior count so the first update is
# well defined, and a floor under the variance before taking its square root.
PRIOR_COUNT = 1e-4
VAR_EPS = 1e-8


@struct.dataclass
class RunningStats:
    mean: jax.Array
    var: jax.Array
    count: jax.Array


def fresh_stats(shape: tuple[int, ...]) -> RunningStats:
    return RunningStats(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.float32(PRIOR_COUNT))


def merge_batch(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Merge a batch (leading axis = samples) into the running mean and variance (Chan et al.)."""
    n = batch.shape[0]
    batch_mean, batch_var = batch.mean(0), batch.var(0)
    delta = batch_mean - stats.mean
    total = stats.count + n
    m2 = stats.var * stats.count + batch_var * n + jnp.square(delta) * stats.count * n / total
    return RunningStats(stats.mean + delta * n / total, m2 / total, total)


class Wrapper:
    """Forwards every attribute it does not define (obs_shape, discrete, ...) to the inner env."""

    def __init__(self, env: Any):
        self.inner = env

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


@struct.dataclass
class NormalizeObsState:
    inner: Any
    stats: RunningStats


class NormalizeObservation(Wrapper):
    """Observations (and ``info["final_obs"]``) shifted and scaled by running statistics."""

    def _normalize(self, obs: jax.Array, stats: RunningStats) -> jax.Array:
        return (obs - stats.mean) / jnp.sqrt(stats.var + VAR_EPS)

    def reset(self, keys: jax.Array, stats_from: Any = None) -> tuple[jax.Array, NormalizeObsState]:
        inner_from = None if stats_from is None else stats_from.inner
        obs, inner = self.inner.reset(keys, inner_from)
        stats = merge_batch(fresh_stats(obs.shape[1:]), obs) if stats_from is None else stats_from.stats
        return self._normalize(obs, stats), NormalizeObsState(inner, stats)

    def step(
        self, keys: jax.Array, state: NormalizeObsState, action: jax.Array, update_stats: bool = True
    ) -> StepResult:
        obs, inner, reward, terminated, truncated, info = self.inner.step(
            keys, state.inner, action, update_stats
        )
        stats = merge_batch(state.stats, obs) if update_stats else state.stats
        info = {**info, "final_obs": self._normalize(info["final_obs"], stats)}
        return (
            self._normalize(obs, stats),
            NormalizeObsState(inner, stats),
            reward,
            terminated,
            truncated,
            info,
        )


@struct.dataclass
class ScaleRewardState:
    inner: Any
    discounted_return: jax.Array  # (num_envs,)
    stats: RunningStats  # of the discounted return


class ScaleReward(Wrapper):
    """Rewards divided by the running std of the discounted return (gym's NormalizeReward).

    Only the reward the agent learns from changes; the episode returns recorded by
    ``VecEnv`` stay in raw reward units.
    """

    def __init__(self, env: Any, gamma: float):
        super().__init__(env)
        self.gamma = float(gamma)

    def reset(self, keys: jax.Array, stats_from: Any = None) -> tuple[jax.Array, ScaleRewardState]:
        inner_from = None if stats_from is None else stats_from.inner
        obs, inner = self.inner.reset(keys, inner_from)
        stats = fresh_stats(()) if stats_from is None else stats_from.stats
        return obs, ScaleRewardState(inner, jnp.zeros((keys.shape[0],), jnp.float32), stats)

    def step(
        self, keys: jax.Array, state: ScaleRewardState, action: jax.Array, update_stats: bool = True
    ) -> StepResult:
        obs, inner, reward, terminated, truncated, info = self.inner.step(
            keys, state.inner, action, update_stats
        )
        discounted = state.discounted_return * self.gamma + reward
        stats = merge_batch(state.stats, discounted) if update_stats else state.stats
        discounted = jnp.where(info["done"], 0.0, discounted)
        scaled = reward / jnp.sqrt(stats.var + VAR_EPS)
        return obs, ScaleRewardState(inner, discounted, stats), scaled, terminated, truncated, info
