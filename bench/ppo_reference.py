"""A single-file, fully-jitted PPO for CartPole in the style of PureJaxRL's ppo.py.

The yardstick for ``bench/ppo_speed.py``: the whole run (every rollout and update)
is one ``jax.jit`` of a ``lax.scan``, with a Flax Linen actor-critic, the same
hyperparameters and the same algorithm as PureJaxRL (GAE, clipped policy and value
losses, entropy bonus, minibatch epochs, linearly annealed learning rate, gradient
clipping). Adapted to gymnax 1.0, whose ``step`` returns terminated and truncated
separately; like PureJaxRL it treats either as the end of the episode.

    python bench/ppo_reference.py      # trains one seed, prints compile s and env-steps/s
"""

from __future__ import annotations

import time
from typing import NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState

CONFIG = {
    "LR": 2.5e-4,
    "NUM_ENVS": 4,
    "NUM_STEPS": 128,
    "TOTAL_TIMESTEPS": 5e5,
    "UPDATE_EPOCHS": 4,
    "NUM_MINIBATCHES": 4,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 0.95,
    "CLIP_EPS": 0.2,
    "ENT_COEF": 0.01,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "ENV_NAME": "CartPole-v1",
}


class ActorCritic(nn.Module):
    action_dim: int

    @nn.compact
    def __call__(self, x):
        def dense(features, scale):
            return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=constant(0.0))

        actor = nn.tanh(dense(64, np.sqrt(2))(x))
        actor = nn.tanh(dense(64, np.sqrt(2))(actor))
        logits = dense(self.action_dim, 0.01)(actor)
        critic = nn.tanh(dense(64, np.sqrt(2))(x))
        critic = nn.tanh(dense(64, np.sqrt(2))(critic))
        value = dense(1, 1.0)(critic)
        return logits, jnp.squeeze(value, axis=-1)


class Transition(NamedTuple):
    done: jnp.ndarray
    action: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    log_prob: jnp.ndarray
    obs: jnp.ndarray
    returned_episode: jnp.ndarray
    episode_return: jnp.ndarray


class LogState(NamedTuple):
    env_state: object
    episode_return: jnp.ndarray
    returned_episode_return: jnp.ndarray


def make_train(config: dict):
    """Return ``train(rng) -> (runner_state, metrics)``, to be jitted as one program."""
    num_updates = int(config["TOTAL_TIMESTEPS"]) // config["NUM_STEPS"] // config["NUM_ENVS"]
    batch_size = config["NUM_ENVS"] * config["NUM_STEPS"]
    env, env_params = gymnax.make(config["ENV_NAME"])

    def env_reset(key):
        obs, state = env.reset(key, env_params)
        return obs, LogState(state, jnp.float32(0.0), jnp.float32(0.0))

    def env_step(key, state, action):
        obs, env_state, reward, terminated, truncated, _ = env.step(key, state.env_state, action, env_params)
        done = jnp.logical_or(terminated, truncated)
        ret = state.episode_return + reward
        state = LogState(
            env_state,
            ret * (1 - done),
            jnp.where(done, ret, state.returned_episode_return),
        )
        return obs, state, reward, done, state.returned_episode_return

    def linear_schedule(count):
        frac = 1.0 - (count // (config["NUM_MINIBATCHES"] * config["UPDATE_EPOCHS"])) / num_updates
        return config["LR"] * frac

    def log_prob_of(logits, action):
        logp = jax.nn.log_softmax(logits)
        return jnp.take_along_axis(logp, action[..., None], axis=-1)[..., 0]

    def train(rng):
        network = ActorCritic(env.action_space(env_params).n)
        rng, init_rng = jax.random.split(rng)
        params = network.init(init_rng, jnp.zeros(env.observation_space(env_params).shape))
        tx = optax.chain(
            optax.clip_by_global_norm(config["MAX_GRAD_NORM"]),
            optax.adam(learning_rate=linear_schedule, eps=1e-5),
        )
        train_state = TrainState.create(apply_fn=network.apply, params=params, tx=tx)
        rng, reset_rng = jax.random.split(rng)
        obs, env_state = jax.vmap(env_reset)(jax.random.split(reset_rng, config["NUM_ENVS"]))

        def update_step(runner_state, _):
            def env_step_fn(runner_state, _):
                train_state, env_state, last_obs, rng = runner_state
                rng, action_rng = jax.random.split(rng)
                logits, value = network.apply(train_state.params, last_obs)
                action = jax.random.categorical(action_rng, logits)
                log_prob = log_prob_of(logits, action)
                rng, step_rng = jax.random.split(rng)
                step_rngs = jax.random.split(step_rng, config["NUM_ENVS"])
                obs, env_state, reward, done, ep_ret = jax.vmap(env_step)(step_rngs, env_state, action)
                transition = Transition(done, action, value, reward, log_prob, last_obs, done, ep_ret)
                return (train_state, env_state, obs, rng), transition

            runner_state, traj = jax.lax.scan(env_step_fn, runner_state, None, config["NUM_STEPS"])
            train_state, env_state, last_obs, rng = runner_state
            _, last_val = network.apply(train_state.params, last_obs)

            def gae_fn(carry, t):
                gae, next_value = carry
                delta = t.reward + config["GAMMA"] * next_value * (1 - t.done) - t.value
                gae = delta + config["GAMMA"] * config["GAE_LAMBDA"] * (1 - t.done) * gae
                return (gae, t.value), gae

            _, advantages = jax.lax.scan(
                gae_fn, (jnp.zeros_like(last_val), last_val), traj, reverse=True, unroll=16
            )
            targets = advantages + traj.value

            def update_epoch(update_state, _):
                def update_minibatch(train_state, batch):
                    traj, gae, targets = batch

                    def loss_fn(params):
                        logits, value = network.apply(params, traj.obs)
                        log_prob = log_prob_of(logits, traj.action)
                        value_clipped = traj.value + (value - traj.value).clip(
                            -config["CLIP_EPS"], config["CLIP_EPS"]
                        )
                        value_loss = (
                            0.5
                            * jnp.maximum(
                                jnp.square(value - targets), jnp.square(value_clipped - targets)
                            ).mean()
                        )
                        ratio = jnp.exp(log_prob - traj.log_prob)
                        norm_gae = (gae - gae.mean()) / (gae.std() + 1e-8)
                        actor_loss = -jnp.minimum(
                            ratio * norm_gae,
                            jnp.clip(ratio, 1.0 - config["CLIP_EPS"], 1.0 + config["CLIP_EPS"]) * norm_gae,
                        ).mean()
                        logp = jax.nn.log_softmax(logits)
                        entropy = -(jnp.exp(logp) * logp).sum(-1).mean()
                        return actor_loss + config["VF_COEF"] * value_loss - config["ENT_COEF"] * entropy

                    loss, grads = jax.value_and_grad(loss_fn)(train_state.params)
                    return train_state.apply_gradients(grads=grads), loss

                train_state, traj, advantages, targets, rng = update_state
                rng, perm_rng = jax.random.split(rng)
                permutation = jax.random.permutation(perm_rng, batch_size)
                batch = jax.tree.map(
                    lambda x: x.reshape((batch_size,) + x.shape[2:]), (traj, advantages, targets)
                )
                minibatches = jax.tree.map(
                    lambda x: jnp.take(x, permutation, axis=0).reshape(
                        (config["NUM_MINIBATCHES"], -1) + x.shape[1:]
                    ),
                    batch,
                )
                train_state, loss = jax.lax.scan(update_minibatch, train_state, minibatches)
                return (train_state, traj, advantages, targets, rng), loss

            update_state = (train_state, traj, advantages, targets, rng)
            update_state, loss = jax.lax.scan(update_epoch, update_state, None, config["UPDATE_EPOCHS"])
            train_state, rng = update_state[0], update_state[-1]
            metrics = {"returned_episode": traj.returned_episode, "episode_return": traj.episode_return}
            return (train_state, env_state, last_obs, rng), metrics

        rng, loop_rng = jax.random.split(rng)
        runner_state = (train_state, env_state, obs, loop_rng)
        return jax.lax.scan(update_step, runner_state, None, num_updates)

    return train


def last_fraction_return(metrics: dict, fraction: float = 0.1) -> float:
    """Mean return of the episodes that ended in the last ``fraction`` of training."""
    done = np.asarray(metrics["returned_episode"])
    returns = np.asarray(metrics["episode_return"])
    start = int(len(done) * (1 - fraction))
    return float(returns[start:][done[start:]].mean())


def main() -> None:
    train = jax.jit(make_train(dict(CONFIG)))
    rng = jax.random.PRNGKey(0)
    start = time.perf_counter()
    compiled = train.lower(rng).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(rng))
    run_s = time.perf_counter() - start
    steps = int(CONFIG["TOTAL_TIMESTEPS"]) // (CONFIG["NUM_ENVS"] * CONFIG["NUM_STEPS"])
    steps *= CONFIG["NUM_ENVS"] * CONFIG["NUM_STEPS"]
    print(
        f"compile {compile_s:.2f} s, {steps / run_s:,.0f} env-steps/s, "
        f"last-10% return {last_fraction_return(metrics):.1f}"
    )


if __name__ == "__main__":
    main()
