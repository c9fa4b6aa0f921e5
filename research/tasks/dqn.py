"""Deep Q-learning on vectorised gymnax environments (DQN, optionally double DQN).

One ``train_step`` is one chunk: ``train_frequency`` epsilon-greedy steps of every
environment, each transition written to a replay buffer that lives on device in
the state, then one gradient update on a minibatch sampled from the buffer, and
a (soft or hard) target-network update every ``target_update_every`` chunks.
Updates start after ``learning_starts`` env steps; before that the parameters are
left unchanged (a select, not a branch, so it costs the same under ``vmap`` over
seeds). Buffer, target network, env states and PRNG key are all in the state, so
a checkpoint resumes exactly.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.tasks.rl_common import (
    Agent,
    completed_return,
    env_keys,
    positive_ints,
    require,
    without_weak_types,
)


def buffer_init(capacity: int, obs_shape: tuple[int, ...]) -> dict:
    """An empty circular buffer of transitions (obs, action, reward, next_obs, terminated)."""
    return {
        "obs": jnp.zeros((capacity, *obs_shape), jnp.float32),
        "action": jnp.zeros((capacity,), jnp.int32),
        "reward": jnp.zeros((capacity,), jnp.float32),
        "next_obs": jnp.zeros((capacity, *obs_shape), jnp.float32),
        "terminated": jnp.zeros((capacity,), jnp.float32),
        "pos": jnp.int32(0),
        "size": jnp.int32(0),
    }


def buffer_add(buffer: dict, transitions: dict) -> dict:
    """Write a batch of transitions (leading axis n) after the newest, overwriting the oldest."""
    capacity = buffer["action"].shape[0]
    n = transitions["action"].shape[0]
    idx = (buffer["pos"] + jnp.arange(n)) % capacity
    out = {k: buffer[k].at[idx].set(v) for k, v in transitions.items()}
    out["pos"] = (buffer["pos"] + n) % capacity
    out["size"] = jnp.minimum(buffer["size"] + n, capacity)
    return out


def buffer_sample(buffer: dict, key: jax.Array, batch_size: int) -> dict:
    """``batch_size`` transitions drawn uniformly (with replacement) from the filled part."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer["size"], 1))
    return {k: v[idx] for k, v in buffer.items() if k not in ("pos", "size")}


class DQN(Agent):
    """The DQN task. ``model`` is a partial of a Q-network NNX module class
    (``research.models.q_network.QNetwork``); ``env`` comes from ``research.envs.make``.
    """

    def __init__(
        self,
        model: Any,
        make_optimizer: Any,
        total_steps: int,
        env: Any = None,
        dataset: Any = None,
        *,
        num_envs: int,
        train_frequency: int,
        buffer_size: int,
        batch_size: int,
        learning_starts: int,
        target_update_every: int,
        tau: float,
        gamma: float,
        epsilon_start: float,
        epsilon_end: float,
        exploration_fraction: float,
        double_dqn: bool,
        eval_episodes: int,
        env_rng: str,
    ):
        super().__init__("dqn", env, dataset, num_envs, eval_episodes, env_rng)
        require(
            env.discrete, f"task=dqn needs discrete actions; {env.name} has continuous ones: use task=ppo"
        )
        positive_ints(
            "dqn",
            train_frequency=train_frequency,
            buffer_size=buffer_size,
            batch_size=batch_size,
            target_update_every=target_update_every,
        )
        require(0 < tau <= 1, f"task.tau must be in (0, 1], got {tau}")
        require(
            0 <= exploration_fraction <= 1,
            f"task.exploration_fraction must be in [0, 1], got {exploration_fraction}",
        )
        self.train_frequency = train_frequency
        self.buffer_size, self.batch_size = buffer_size, batch_size
        self.learning_starts, self.target_update_every = int(learning_starts), target_update_every
        self.tau, self.gamma, self.double_dqn = float(tau), float(gamma), bool(double_dqn)
        # Updates before learning_starts leave the optimizer alone: its schedule spans the rest.
        idle_steps = -(-self.learning_starts // (train_frequency * num_envs))
        self.tx = make_optimizer(max(total_steps - idle_steps, 1))
        total_env_steps = total_steps * train_frequency * num_envs
        self.epsilon = optax.linear_schedule(
            float(epsilon_start), float(epsilon_end), max(int(exploration_fraction * total_env_steps), 1)
        )
        self.set_model(functools.partial(model, obs_shape=env.obs_shape, num_actions=env.action_dim))

    def init(self, rng: jax.Array, batch: Any = None) -> dict:
        state = self.fresh_state(rng)
        return without_weak_types(
            {
                **state,
                "target_params": state["params"],
                "buffer": buffer_init(self.buffer_size, self.env.obs_shape),
                "env_steps": jnp.int32(0),
            }
        )

    def _act(self, q_net: Any, state: dict, key: jax.Array) -> tuple[dict, jax.Array, jax.Array]:
        """``train_frequency`` epsilon-greedy steps of every env, stored in the buffer."""
        shape = (self.train_frequency, self.num_envs)
        explore_key, action_key, env_key = jax.random.split(key, 3)
        xs = (
            jax.random.uniform(explore_key, shape),
            jax.random.randint(action_key, shape, 0, self.env.action_dim),
            env_keys(env_key, shape, self.env_rng),
        )

        def env_step(carry: tuple, x: tuple) -> tuple:
            env_state, obs, buffer, env_steps = carry
            u, random_action, keys = x
            greedy = jnp.argmax(q_net(obs), axis=-1)
            action = jnp.where(u < self.epsilon(env_steps), random_action, greedy)
            next_obs, env_state, reward, terminated, _, info = self.env.step(keys, env_state, action)
            buffer = buffer_add(
                buffer,
                {
                    "obs": obs,
                    "action": action,
                    "reward": reward,
                    "next_obs": info["final_obs"],
                    "terminated": terminated.astype(jnp.float32),
                },
            )
            carry = (env_state, next_obs, buffer, env_steps + self.num_envs)
            return carry, (info["done"], info["episode_return"])

        carry = (state["env_state"], state["obs"], state["buffer"], state["env_steps"])
        (env_state, obs, buffer, env_steps), (done, episode_return) = jax.lax.scan(env_step, carry, xs)
        state = {**state, "env_state": env_state, "obs": obs, "buffer": buffer, "env_steps": env_steps}
        return state, done, episode_return

    def _loss(self, params: dict, target_params: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
        q_net, target_net = nnx.merge(self.graphdef, params), nnx.merge(self.graphdef, target_params)
        next_target = target_net(batch["next_obs"])
        if self.double_dqn:  # the online network picks the action, the target network values it
            best = jnp.argmax(q_net(batch["next_obs"]), axis=-1)
            next_value = jnp.take_along_axis(next_target, best[:, None], axis=-1)[:, 0]
        else:
            next_value = next_target.max(-1)
        target = batch["reward"] + self.gamma * (1.0 - batch["terminated"]) * jax.lax.stop_gradient(
            next_value
        )
        q = jnp.take_along_axis(q_net(batch["obs"]), batch["action"][:, None], axis=-1)[:, 0]
        return jnp.square(q - target).mean(), q.mean()

    def train_step(self, state: dict, batch: Any = None) -> tuple[dict, dict]:
        rng, act_key, sample_key = jax.random.split(state["rng"], 3)
        params = state["params"]
        state, done, episode_return = self._act(nnx.merge(self.graphdef, params), state, act_key)

        minibatch = buffer_sample(state["buffer"], sample_key, self.batch_size)
        (loss, q_mean), grads = jax.value_and_grad(self._loss, has_aux=True)(
            params, state["target_params"], minibatch
        )
        updates, opt_state = self.tx.update(grads, state["opt_state"], params)
        learning = state["env_steps"] >= self.learning_starts
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(learning, new, old),
            (optax.apply_updates(params, updates), opt_state),
            (params, state["opt_state"]),
        )
        step = state["step"] + 1
        sync = step % self.target_update_every == 0
        target_params = jax.tree.map(
            lambda online, target: jnp.where(sync, self.tau * online + (1.0 - self.tau) * target, target),
            params,
            state["target_params"],
        )
        last_return = completed_return(done, episode_return, state["last_return"])
        state = {
            **state,
            "step": step,
            "params": params,
            "target_params": target_params,
            "opt_state": opt_state,
            "rng": rng,
            "last_return": last_return,
        }
        metrics = {
            "loss": loss,
            "q_mean": q_mean,
            "epsilon": self.epsilon(state["env_steps"]),
            "return": last_return,
            "env_steps": jnp.float32(self.train_frequency * self.num_envs),
        }
        return state, metrics

    def greedy_action(self, model: nnx.Module, obs: jax.Array) -> jax.Array:
        return jnp.argmax(model(obs), axis=-1)
