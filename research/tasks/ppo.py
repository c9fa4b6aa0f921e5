"""Proximal Policy Optimization on vectorised gymnax environments, PureJaxRL style.

One ``train_step`` is one PPO iteration, a single XLA program: roll the policy out
for ``num_steps`` in ``num_envs`` environments, compute GAE advantages, then run
``update_epochs`` passes of ``num_minibatches`` clipped-objective updates. The
engine scans it K times per dispatch, so the loop can log, evaluate, checkpoint
and stop between calls. Everything that changes (parameters, optimizer, env
states, observations, PRNG key) lives in the state dict: a checkpoint resumes
exactly, and ``trainer.num_seeds`` vmaps whole agents.

Two choices differ from PureJaxRL's ppo.py, both cheaper and no less correct:
values and log-probabilities of the rollout are computed in one batched pass
after it (the parameters do not change during a rollout), and a time-limit
truncation bootstraps from the value of the observation it cut off.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.tasks.rl_common import (
    Agent,
    completed_return,
    env_keys,
    gae,
    positive_ints,
    require,
    without_weak_types,
)

ADV_EPS = 1e-8  # guards the per-minibatch advantage normalisation against zero spread


class Rollout(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    done: jax.Array
    final_obs: jax.Array
    episode_return: jax.Array


class Minibatch(NamedTuple):
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


class PPO(Agent):
    """The PPO task. ``model`` is a partial of an actor-critic NNX module class
    (``research.models.actor_critic.ActorCritic``); ``env`` comes from ``research.envs.make``.
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
        num_steps: int,
        update_epochs: int,
        num_minibatches: int,
        gamma: float,
        gae_lambda: float,
        clip_eps: float,
        ent_coef: float,
        vf_coef: float,
        eval_episodes: int,
        env_rng: str,
    ):
        super().__init__("ppo", env, dataset, num_envs, eval_episodes, env_rng)
        positive_ints(
            "ppo", num_steps=num_steps, update_epochs=update_epochs, num_minibatches=num_minibatches
        )
        batch = num_envs * num_steps
        require(
            batch % num_minibatches == 0,
            f"task.num_minibatches={num_minibatches} must divide num_envs*num_steps={batch}",
        )
        require(
            0 < gamma <= 1 and 0 <= gae_lambda <= 1,
            "task.gamma must be in (0, 1] and task.gae_lambda in [0, 1]",
        )
        self.num_steps = num_steps
        self.update_epochs, self.num_minibatches = update_epochs, num_minibatches
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.clip_eps, self.ent_coef, self.vf_coef = float(clip_eps), float(ent_coef), float(vf_coef)
        self.tx = make_optimizer(total_steps * update_epochs * num_minibatches)
        self.set_model(
            functools.partial(
                model, obs_shape=env.obs_shape, action_dim=env.action_dim, continuous=not env.discrete
            )
        )

    def init(self, rng: jax.Array, batch: Any = None) -> dict:
        return without_weak_types(self.fresh_state(rng))

    def _rollout(self, params: dict, env_state: Any, obs: jax.Array, key: jax.Array) -> tuple:
        """``num_steps`` steps of every env; the randomness of all of them is drawn up front."""
        policy = nnx.merge(self.graphdef, params)
        noise_key, env_key = jax.random.split(key)
        noise = policy.action_noise(noise_key, (self.num_steps, self.num_envs))
        keys = env_keys(env_key, (self.num_steps, self.num_envs), self.env_rng)

        def env_step(carry: tuple, x: tuple) -> tuple:
            env_state, obs = carry
            noise, keys = x
            dist, _ = policy(obs)  # the value head is unused here, so XLA drops it
            action = dist.sample_from(noise)
            next_obs, env_state, reward, terminated, _, info = self.env.step(keys, env_state, action)
            step = Rollout(
                obs,
                action,
                reward,
                terminated.astype(jnp.float32),
                info["done"].astype(jnp.float32),
                info["final_obs"],
                info["episode_return"],
            )
            return (env_state, next_obs), step

        return jax.lax.scan(env_step, (env_state, obs), (noise, keys))

    def _loss(self, params: dict, mb: Minibatch) -> tuple[jax.Array, dict]:
        dist, value = nnx.merge(self.graphdef, params)(mb.obs)
        value_clipped = mb.value + jnp.clip(value - mb.value, -self.clip_eps, self.clip_eps)
        value_loss = (
            0.5 * jnp.maximum(jnp.square(value - mb.target), jnp.square(value_clipped - mb.target)).mean()
        )
        log_ratio = dist.log_prob(mb.action) - mb.log_prob
        ratio = jnp.exp(log_ratio)
        advantage = (mb.advantage - mb.advantage.mean()) / (mb.advantage.std() + ADV_EPS)
        clipped = jnp.clip(ratio, 1.0 - self.clip_eps, 1.0 + self.clip_eps)
        policy_loss = -jnp.minimum(ratio * advantage, clipped * advantage).mean()
        entropy = dist.entropy().mean()
        loss = policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        return loss, {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": approx_kl,
        }

    def _update(self, carry: tuple, mb: Minibatch) -> tuple:
        params, opt_state = carry
        grads, stats = jax.grad(self._loss, has_aux=True)(params, mb)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats

    def train_step(self, state: dict, batch: Any = None) -> tuple[dict, dict]:
        rng, rollout_key, update_key = jax.random.split(state["rng"], 3)
        params = state["params"]
        (env_state, obs), traj = self._rollout(params, state["env_state"], state["obs"], rollout_key)

        model = nnx.merge(self.graphdef, params)
        dist, values = model(traj.obs)
        _, next_values = model(traj.final_obs)
        advantages, targets = gae(
            traj.reward, values, next_values, traj.terminated, traj.done, self.gamma, self.gae_lambda
        )
        size = self.num_steps * self.num_envs
        flat = jax.tree.map(
            lambda x: x.reshape(size, *x.shape[2:]),
            Minibatch(traj.obs, traj.action, dist.log_prob(traj.action), values, advantages, targets),
        )

        def epoch(carry: tuple, order: jax.Array) -> tuple:
            minibatches = jax.tree.map(
                lambda x: x[order].reshape(self.num_minibatches, -1, *x.shape[1:]), flat
            )
            return jax.lax.scan(self._update, carry, minibatches)

        orders = jnp.argsort(jax.random.bits(update_key, (self.update_epochs, size)), axis=-1)
        (params, opt_state), stats = jax.lax.scan(epoch, (params, state["opt_state"]), orders)
        episode_return = completed_return(traj.done > 0, traj.episode_return, state["last_return"])
        new_state = {
            **state,
            "step": state["step"] + 1,
            "params": params,
            "opt_state": opt_state,
            "env_state": env_state,
            "obs": obs,
            "rng": rng,
            "last_return": episode_return,
        }
        metrics = {k: v.mean() for k, v in stats.items()}
        metrics["return"] = episode_return
        metrics["env_steps"] = jnp.float32(size)
        return new_state, metrics

    def greedy_action(self, model: nnx.Module, obs: jax.Array) -> jax.Array:
        return model(obs)[0].mode()
