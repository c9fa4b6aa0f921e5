"""Pieces PPO and DQN share: the agent base class, state hygiene, GAE, episode returns, greedy evaluation.

All functions are pure and jittable, and work unchanged under the engine's
``vmap`` over seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.engine.api import Evaluator, Schedule
from research.errors import ConfigError
from research.evaluators.state_function import StateFunction
from research.metrics import safe_divide
from research.tasks.base import TaskBase

ENV_RNG_IMPLS = ("threefry2x32", "unsafe_rbg")


def check_env_rng(task: str, impl: str) -> str:
    require(
        impl in ENV_RNG_IMPLS, f"task.env_rng={impl!r} for {task} must be one of: {', '.join(ENV_RNG_IMPLS)}"
    )
    return impl


def env_keys(key: jax.Array, shape: tuple[int, ...], impl: str) -> jax.Array:
    """Typed keys of ``impl`` for env steps, drawn from a threefry ``key`` in one bulk call.

    gymnax splits its key and samples inside every step (the auto-reset). With jax 0.10 on
    CPU a threefry call was a rolled loop of ~80 small ops, several times the cost of the
    CartPole step itself, and ``unsafe_rbg`` keys (single fused ops) made PPO 1.3x faster;
    with jax 0.11 threefry is the faster of the two (docs/benchmarks.md). ``unsafe_rbg`` key
    data (4 words) is filled from threefry here, so the streams stay independent.
    """
    if impl == "threefry2x32":
        return jax.random.wrap_key_data(jax.random.split(key, shape))
    words = jax.random.key_data(jax.random.split(key, (*shape, 2))).reshape(*shape, 4)
    return jax.random.wrap_key_data(words, impl=impl)


def without_weak_types(tree: Any) -> Any:
    """The same pytree without weak types (gymnax leaves some), so scan carries keep one type."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, dict]:
    """(graphdef, parameters as a plain nested dict): the dict is what the state and optimizer hold."""
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, nnx.to_pure_dict(params)


def model_graphdef(build: Callable[..., nnx.Module]) -> nnx.GraphDef:
    """The static structure of ``build(rngs=...)``, found without allocating or computing anything."""
    abstract = nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0)))
    return nnx.split(abstract, nnx.Param)[0]


def require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def positive_ints(task: str, **values: Any) -> None:
    """Every value is an int > 0, else a ConfigError naming ``task.<key>``."""
    for key, value in values.items():
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        require(ok, f"task.{key} must be a positive integer for {task}, got {value!r}")


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimates and value targets over a (time, envs) rollout.

    ``next_values`` are the values of the true next observations (before auto-reset),
    so a time-limit truncation bootstraps from the state it cut off, while a real
    termination (``terminated``) does not; either kind of episode end (``done``) stops
    the advantage from flowing back across the episode boundary.
    """
    deltas = rewards + gamma * next_values * (1.0 - terminated) - values
    decay = gamma * gae_lambda * (1.0 - done)

    def backward(next_advantage: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta, k = x
        advantage = delta + k * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(values[0]), (deltas, decay), reverse=True)
    return advantages, advantages + values


def completed_return(done: jax.Array, episode_return: jax.Array, last: jax.Array) -> jax.Array:
    """Mean return of the episodes that ended in ``done``; ``last`` when none did (keeps curves NaN-free)."""
    count = done.sum()
    mean = jnp.where(done, episode_return, 0.0).sum() / jnp.maximum(count, 1)
    return jnp.where(count > 0, mean, last)


def evaluate_greedy(
    env: Any,
    act: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    num_episodes: int,
    train_env_state: Any,
    env_rng: str,
) -> dict[str, jax.Array]:
    """Sums over one episode in each of ``num_episodes`` fresh envs played with ``act``.

    Wrapper statistics (observation normalisation) come from ``train_env_state`` and
    stay frozen. Runs until every episode has ended: at most the env's time limit.
    """
    reset_key, step_key = jax.random.split(key)
    obs, env_state = env.reset(env_keys(reset_key, (num_episodes,), env_rng), stats_from=train_env_state)
    finished = jnp.zeros((num_episodes,), bool)
    returns = jnp.zeros((num_episodes,), jnp.float32)

    def running(carry: tuple) -> jax.Array:
        t, _, _, finished, _ = carry
        return jnp.logical_and(t < env.max_episode_steps, ~finished.all())

    def step(carry: tuple) -> tuple:
        t, obs, env_state, finished, returns = carry
        keys = env_keys(jax.random.fold_in(step_key, t), (num_episodes,), env_rng)
        obs, env_state, _, _, _, info = env.step(keys, env_state, act(obs), update_stats=False)
        first_end = jnp.logical_and(info["done"], ~finished)
        returns = jnp.where(first_end, info["episode_return"], returns)
        return t + 1, obs, env_state, jnp.logical_or(finished, info["done"]), returns

    carry = (jnp.int32(0), obs, env_state, finished, returns)
    _, _, _, finished, returns = jax.lax.while_loop(running, step, carry)
    return {
        "return_sum": jnp.where(finished, returns, 0.0).sum(),
        "episodes": finished.sum().astype(jnp.float32),
    }


class Agent(TaskBase):
    """What PPO and DQN share: checks of the env settings, a model built for the env, a fresh
    state, greedy evaluation. Subclasses call ``__init__`` first, then ``set_model`` and set ``tx``,
    and say how the model acts greedily (``greedy_action``).
    """

    tx: optax.GradientTransformation
    metric, metric_mode = "eval/return", "max"
    headline = ("train/return",)
    counters = ("env_steps",)
    reusable = ("params",)

    def __init__(
        self, task: str, env: Any, dataset: Any, num_envs: int, eval_episodes: int, env_rng: str
    ) -> None:
        require(env is not None, f"task={task} needs an environment: add env=cartpole (see conf/env/)")
        require(dataset is None, f"task={task} learns from an environment, not a dataset: set data=none")
        positive_ints(task, num_envs=num_envs, eval_episodes=eval_episodes)
        self.env, self.num_envs, self.eval_episodes = env, num_envs, eval_episodes
        self.env_rng = check_env_rng(task, env_rng)

    def set_model(self, build: Callable[..., nnx.Module]) -> None:
        """``build(rngs=...)`` makes the model; its static structure is kept for ``nnx.merge``."""
        self.build = build
        self.graphdef = model_graphdef(build)

    def greedy_action(self, model: nnx.Module, obs: jax.Array) -> jax.Array:
        raise NotImplementedError

    def fresh_state(self, rng: jax.Array) -> dict:
        """Step 0: new parameters and optimizer state, every env reset, keys for training and eval."""
        rng, model_key, env_key, eval_key = jax.random.split(rng, 4)
        _, params = split_model(self.build(rngs=nnx.Rngs(model_key)))
        obs, env_state = self.env.reset(env_keys(env_key, (self.num_envs,), self.env_rng))
        return {
            "step": jnp.int32(0),
            "params": params,
            "opt_state": self.tx.init(params),
            "env_state": env_state,
            "obs": obs,
            "rng": rng,
            "eval_rng": eval_key,
            "last_return": jnp.float32(0.0),
        }

    def eval_step(self, state: dict, batch: Any = None) -> dict:
        model = nnx.merge(self.graphdef, state["params"])
        key = jax.random.fold_in(state["eval_rng"], state["step"])
        return evaluate_greedy(
            self.env,
            lambda obs: self.greedy_action(model, obs),
            key,
            self.eval_episodes,
            state["env_state"],
            self.env_rng,
        )

    def finalize(self, sums: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Mean greedy-episode return."""
        return {"return": safe_divide(sums["return_sum"], sums["episodes"])}

    def evaluators(self) -> dict[str, Evaluator]:
        """Greedy episodes in fresh envs, recorded as ``eval/return`` during training and at the end."""
        greedy = StateFunction(
            lambda state: self.finalize(self.eval_step(state)), ("return",), Schedule(prefix="eval")
        )
        return {"greedy": greedy}
