"""A batch of gymnax environments stepped in lock-step, with episode bookkeeping.

gymnax 1.0 environments take one key per environment, return 6 values from
``step`` (obs, state, reward, terminated, truncated, info) and reset themselves
when an episode ends; ``info["final_observation"]`` holds the observation the
episode ended on. ``VecEnv`` vmaps that over ``num_envs`` copies, keeps each
copy's running (undiscounted) return and length, and reports finished episodes in
``info``. It is the innermost layer, so the returns it records are raw rewards
whatever wrappers scale them later.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

# step(...) -> (obs, state, reward, terminated, truncated, info)
StepResult = tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]


@struct.dataclass
class EpisodeState:
    env: Any  # the gymnax states of all copies (leading num_envs axis)
    episode_return: jax.Array  # (num_envs,) return of the running episode so far
    episode_length: jax.Array  # (num_envs,) steps of the running episode so far


class VecEnv:
    """``num_envs`` copies of one gymnax environment with fixed ``EnvParams``.

    ``info`` from ``step`` holds, per copy: ``final_obs`` (the true next observation,
    before any auto-reset), ``done`` (terminated or truncated), ``episode_return`` and
    ``episode_length`` (of the episode that just ended; meaningful where ``done``).
    Continuous actions are clipped to the action space's bounds.
    """

    def __init__(self, env: Any, params: Any):
        self.env, self.params = env, params
        self.name = env.name
        obs_space, action_space = env.observation_space(params), env.action_space(params)
        self.obs_shape: tuple[int, ...] = tuple(int(d) for d in obs_space.shape)
        self.discrete = hasattr(action_space, "n")
        if self.discrete:
            self.action_dim = int(action_space.n)
            self.action_low = self.action_high = None
        else:
            self.action_dim = math.prod(action_space.shape) if action_space.shape else 1
            self.action_shape = tuple(action_space.shape)
            self.action_low = jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), self.action_shape)
            self.action_high = jnp.broadcast_to(
                jnp.asarray(action_space.high, jnp.float32), self.action_shape
            )
        self.max_episode_steps = int(params.max_steps_in_episode)

    def reset(self, keys: jax.Array, stats_from: Any = None) -> tuple[jax.Array, EpisodeState]:
        """Fresh episodes in as many copies as ``keys`` (``stats_from`` only matters to wrappers)."""
        obs, env_state = jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.params)
        zeros = jnp.zeros((keys.shape[0],), jnp.float32)
        return obs.astype(jnp.float32), EpisodeState(env_state, zeros, zeros.astype(jnp.int32))

    def step(
        self, keys: jax.Array, state: EpisodeState, action: jax.Array, update_stats: bool = True
    ) -> StepResult:
        """One step of every copy with one key each; finished copies start a new episode.

        Per-copy keys let callers draw the keys of a whole rollout in one call before
        it, which on CPU is much cheaper than splitting inside every step.
        """
        num_envs = state.episode_return.shape[0]
        if not self.discrete:
            action = jnp.clip(
                action.reshape((num_envs, *self.action_shape)), self.action_low, self.action_high
            )
        obs, env_state, reward, terminated, truncated, info = jax.vmap(
            self.env.step, in_axes=(0, 0, 0, None)
        )(keys, state.env, action, self.params)
        reward = reward.astype(jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        state = EpisodeState(
            env_state,
            jnp.where(done, 0.0, episode_return),
            jnp.where(done, 0, episode_length),
        )
        info = {
            "final_obs": info["final_observation"].astype(jnp.float32),
            "done": done,
            "episode_return": episode_return,
            "episode_length": episode_length,
        }
        return obs.astype(jnp.float32), state, reward, terminated, truncated, info
