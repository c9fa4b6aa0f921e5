"""research.envs: gymnax construction, episode bookkeeping and the normalisation wrappers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.envs import NormalizeObservation, ScaleReward, make
from research.errors import ConfigError
from research.tasks.rl_common import env_keys
from tests import needs


def _cfg(env_id: str, **kw) -> dict:
    return {"id": env_id, "params": {}, "normalize_obs": False, "scale_reward": False, "gamma": 0.99, **kw}


def _run(env, steps: int, num_envs: int, seed: int = 0, action=None):
    """Random (or fixed) actions for ``steps`` steps; returns the stacked per-step outputs."""
    key = jax.random.PRNGKey(seed)
    obs, state = env.reset(env_keys(key, (num_envs,), "unsafe_rbg"))

    def step(carry, key):
        state, _ = carry
        act_key, env_key = jax.random.split(key)
        if action is not None:
            a = jnp.full((num_envs, env.action_dim) if not env.discrete else (num_envs,), action)
        elif env.discrete:
            a = jax.random.randint(act_key, (num_envs,), 0, env.action_dim)
        else:
            a = jax.random.normal(act_key, (num_envs, env.action_dim))
        obs, state, reward, terminated, truncated, info = env.step(
            env_keys(env_key, (num_envs,), "unsafe_rbg"), state, a
        )
        return (state, obs), (obs, reward, terminated, truncated, info)

    (state, _), out = jax.jit(lambda s: jax.lax.scan(step, s, jax.random.split(key, steps)))((state, obs))
    return state, out


@needs.gymnax
def test_make_rejects_unknown_ids_and_params() -> None:
    with pytest.raises(ConfigError, match="env.id='CartPole-v9' is not a gymnax environment"):
        make(_cfg("CartPole-v9"))
    with pytest.raises(ConfigError, match="env.params has no field 'gravity_x'"):
        make(_cfg("CartPole-v1", params={"gravity_x": 1.0}))


@needs.gymnax
def test_spaces_of_discrete_continuous_and_image_envs() -> None:
    cartpole, pendulum, breakout = (
        make(_cfg("CartPole-v1")),
        make(_cfg("Pendulum-v1")),
        make(_cfg("Breakout-MinAtar")),
    )
    assert (cartpole.obs_shape, cartpole.discrete, cartpole.action_dim, cartpole.max_episode_steps) == (
        (4,),
        True,
        2,
        500,
    )
    assert (pendulum.obs_shape, pendulum.discrete, pendulum.action_dim) == ((3,), False, 1)
    assert (breakout.obs_shape, breakout.discrete, breakout.action_dim) == ((10, 10, 4), True, 3)


@needs.gymnax
def test_episode_returns_and_final_observations() -> None:
    env = make(_cfg("CartPole-v1", params={"max_steps_in_episode": 30}))
    _, (obs, reward, terminated, truncated, info) = _run(env, 200, 8)
    done = np.asarray(info["done"])
    assert done.sum() > 8 and np.array_equal(done, np.asarray(terminated | truncated))
    # CartPole pays +1 per step, so a finished episode's return is its length (at most the 30-step limit).
    ret, length = np.asarray(info["episode_return"])[done], np.asarray(info["episode_length"])[done]
    np.testing.assert_array_equal(ret, length)
    assert ret.max() <= 30 and np.asarray(truncated).any()
    # Where an episode ended the env auto-reset: the returned obs is a fresh start, final_obs the last state.
    final, nxt = np.asarray(info["final_obs"]), np.asarray(obs)
    assert not np.allclose(final[done], nxt[done])
    np.testing.assert_array_equal(final[~done], nxt[~done])
    assert np.abs(nxt[done]).max() <= 0.05  # CartPole resets uniformly in [-0.05, 0.05]


@needs.gymnax
def test_continuous_actions_are_clipped_to_the_action_space() -> None:
    # MountainCarContinuous charges -0.1 * action**2 on the action it is given (Pendulum clips
    # its torque itself, so it could not tell): equal rewards prove the clip to [-1, 1].
    env = make(_cfg("MountainCarContinuous-v0"))
    _, (_, big, *_) = _run(env, 20, 2, action=100.0)
    _, (_, edge, *_) = _run(env, 20, 2, action=1.0)
    np.testing.assert_array_equal(np.asarray(big), np.asarray(edge))


@needs.gymnax
def test_normalize_observation_standardises_and_eval_freezes_stats() -> None:
    env = make(_cfg("Pendulum-v1", normalize_obs=True))
    assert isinstance(env, NormalizeObservation)
    state, (obs, *_) = _run(env, 300, 16)
    late = np.asarray(obs)[150:].reshape(-1, 3)
    np.testing.assert_allclose(late.mean(0), 0.0, atol=0.25)
    np.testing.assert_allclose(late.std(0), 1.0, atol=0.25)
    # A fresh evaluation env starts with the training statistics and does not move them.
    keys = env_keys(jax.random.PRNGKey(5), (4,), "unsafe_rbg")
    _, eval_state = env.reset(keys, stats_from=state)
    np.testing.assert_array_equal(eval_state.stats.mean, state.stats.mean)
    _, after, *_ = env.step(keys, eval_state, jnp.zeros((4, 1)), update_stats=False)
    np.testing.assert_array_equal(after.stats.mean, state.stats.mean)
    _, trained, *_ = env.step(keys, eval_state, jnp.zeros((4, 1)))
    assert not np.array_equal(trained.stats.mean, state.stats.mean)


def _scaled_rewards(raw: np.ndarray, done: np.ndarray, gamma: float) -> np.ndarray:
    """gym's NormalizeReward, written out: each reward over the std of every discounted return so
    far, all envs and steps up to this one, with a prior of weight 1e-4 at mean 0 and variance 1."""
    returns, seen, out = np.zeros(raw.shape[1]), [], np.zeros_like(raw, dtype=np.float64)
    prior = 1e-4
    for t in range(len(raw)):
        returns = returns * gamma + raw[t]
        seen.extend(returns)
        n, mean, var = len(seen), np.mean(seen), np.var(seen)
        total = prior + n
        pooled = (prior + n * var + mean**2 * prior * n / total) / total  # with the prior's mean 0, var 1
        out[t] = raw[t] / np.sqrt(pooled + 1e-8)
        returns = np.where(done[t], 0.0, returns)
    return out


@needs.gymnax
def test_scale_reward_divides_by_return_std_but_records_raw_returns() -> None:
    raw_env = make(_cfg("CartPole-v1", params={"max_steps_in_episode": 30}))
    env = make(_cfg("CartPole-v1", params={"max_steps_in_episode": 30}, scale_reward=True))
    assert isinstance(env, ScaleReward)
    _, (_, reward, _, _, info) = _run(env, 100, 4)
    _, (_, raw_reward, _, _, raw_info) = _run(raw_env, 100, 4)
    assert np.all(np.asarray(raw_reward) == 1.0)
    done = np.asarray(info["done"])
    assert done.any(), "episodes end in the window, so the discounted return restarts"
    expected = _scaled_rewards(np.asarray(raw_reward, np.float64), done, gamma=0.99)
    np.testing.assert_allclose(np.asarray(reward), expected, rtol=2e-4)
    np.testing.assert_array_equal(
        np.asarray(info["episode_return"])[done], np.asarray(info["episode_length"])[done]
    )
    np.testing.assert_array_equal(np.asarray(raw_info["done"]), done)  # same keys, same episodes


@pytest.mark.parametrize("impl", ["threefry2x32", "unsafe_rbg"])
def test_env_keys_give_distinct_streams(impl: str) -> None:
    keys = env_keys(jax.random.PRNGKey(0), (3, 4), impl)
    assert keys.shape == (3, 4)
    draws = np.asarray(jax.vmap(jax.vmap(lambda k: jax.random.uniform(k)))(keys)).ravel()
    assert len(np.unique(draws)) == 12
