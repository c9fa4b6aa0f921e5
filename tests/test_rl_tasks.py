"""PPO and DQN as plain objects: GAE, replay buffer, one compiled chunk of steps, seeds, learning."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from research.envs import make
from research.errors import ConfigError
from research.models.actor_critic import ActorCritic
from research.models.q_network import QNetwork
from research.tasks.dqn import DQN, buffer_add, buffer_init, buffer_sample
from research.tasks.ppo import PPO
from research.tasks.rl_common import completed_return, env_keys, gae
from tests import needs

PPO_ARGS = dict(
    num_envs=4,
    num_steps=32,
    update_epochs=4,
    num_minibatches=4,
    gamma=0.99,
    gae_lambda=0.95,
    clip_eps=0.2,
    ent_coef=0.01,
    vf_coef=0.5,
    eval_episodes=4,
    env_rng="unsafe_rbg",
)
DQN_ARGS = dict(
    num_envs=4,
    train_frequency=2,
    buffer_size=64,
    batch_size=16,
    learning_starts=40,
    target_update_every=3,
    tau=1.0,
    gamma=0.99,
    epsilon_start=1.0,
    epsilon_end=0.1,
    exploration_fraction=0.5,
    double_dqn=True,
    eval_episodes=4,
    env_rng="unsafe_rbg",
)


def _env(env_id: str = "CartPole-v1", **kw):
    return make(
        {"id": env_id, "params": {}, "normalize_obs": False, "scale_reward": False, "gamma": 0.99, **kw}
    )


def _adam(lr: float = 2.5e-4):
    return lambda total_updates: optax.chain(optax.clip_by_global_norm(0.5), optax.adam(lr, eps=1e-5))


def _ppo(env=None, **kw) -> PPO:
    model = functools.partial(ActorCritic, hidden_sizes=(64, 64), activation="tanh")
    return PPO(model, _adam(1e-3), 200, env or _env(), **{**PPO_ARGS, **kw})


def _chunk(task, steps: int):
    return jax.jit(lambda s: jax.lax.scan(lambda s, _: task.train_step(s, None), s, None, length=steps))


@pytest.fixture(scope="module")
def cartpole_ppo():
    """One compiled PPO on CartPole shared by the tests below: (task, init, 10-iteration chunk, eval)."""
    task = _ppo()
    evaluate = jax.jit(lambda s: task.finalize(task.eval_step(s, None)))
    return task, jax.jit(task.init), _chunk(task, 10), evaluate


def _gae_numpy(r, v, nv, term, done, gamma, lam):
    adv, last = np.zeros_like(r), np.zeros(r.shape[1])
    for t in reversed(range(len(r))):
        delta = r[t] + gamma * nv[t] * (1 - term[t]) - v[t]
        last = delta + gamma * lam * (1 - done[t]) * last
        adv[t] = last
    return adv


def test_gae_matches_the_recursion_with_terminations_and_truncations() -> None:
    rng = np.random.default_rng(0)
    r, v, nv = (rng.normal(size=(12, 3)).astype(np.float32) for _ in range(3))
    done = (rng.random((12, 3)) < 0.3).astype(np.float32)
    term = done * (rng.random((12, 3)) < 0.5)  # some ends are truncations: they bootstrap from nv
    adv, target = gae(*(jnp.asarray(a) for a in (r, v, nv, term, done)), 0.9, 0.8)
    expected = _gae_numpy(r, v, nv, term, done, 0.9, 0.8)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(target, expected + v, rtol=1e-5, atol=1e-5)


def test_completed_return_carries_the_last_value_when_no_episode_ended() -> None:
    done = jnp.array([[False, True], [True, False]])
    ret = jnp.array([[5.0, 10.0], [20.0, 99.0]])
    assert float(completed_return(done, ret, jnp.float32(3.0))) == 15.0
    assert float(completed_return(jnp.zeros_like(done), ret, jnp.float32(3.0))) == 3.0


def test_replay_buffer_wraps_around_and_samples_only_written_rows() -> None:
    buf = buffer_init(5, (2,))
    for i in range(3):  # 3 batches of 2 transitions: the 6th overwrites the 1st
        n = jnp.arange(2 * i, 2 * i + 2, dtype=jnp.float32)
        buf = buffer_add(
            buf,
            {
                "obs": jnp.stack([n, n], 1),
                "action": n.astype(jnp.int32),
                "reward": n,
                "next_obs": jnp.stack([n, n], 1),
                "terminated": jnp.zeros(2),
            },
        )
    assert int(buf["size"]) == 5 and int(buf["pos"]) == 1
    np.testing.assert_array_equal(buf["reward"], [5, 1, 2, 3, 4])
    small = buffer_add(buffer_init(8, (2,)), {k: v[:3] for k, v in buf.items() if k not in ("pos", "size")})
    sample = buffer_sample(small, jax.random.PRNGKey(0), 64)
    assert set(np.asarray(sample["reward"]).tolist()) <= {5.0, 1.0, 2.0}


@needs.gymnax
def test_ppo_chunk_updates_params_and_reports_metrics(cartpole_ppo) -> None:
    task, init, chunk, evaluate = cartpole_ppo
    state = init(jax.random.PRNGKey(0))
    assert state["step"].dtype == jnp.int32 and state["rng"].dtype == jnp.uint32
    new, metrics = chunk(state)
    assert int(new["step"]) == 10
    assert set(metrics) >= {
        "loss",
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "return",
        "env_steps",
    }
    np.testing.assert_array_equal(metrics["env_steps"], [128] * 10)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    changed = jax.tree.map(lambda a, b: bool((a != b).any()), state["params"], new["params"])
    assert all(jax.tree.leaves(changed))
    assert not np.array_equal(state["obs"], new["obs"])
    sums = jax.jit(lambda s: task.eval_step(s, None))(new)
    assert float(sums["episodes"]) == task.eval_episodes, "every evaluation episode ends"
    assert float(evaluate(new)["return"]) == pytest.approx(_greedy_cartpole_return(task, new))


def _greedy_cartpole_return(task: PPO, state: dict) -> float:
    """Greedy evaluation written out on gymnax itself: CartPole pays 1 per step, so the mean
    episode length from the evaluation's start states, playing the policy's most likely action."""
    import gymnax

    env, params = gymnax.make("CartPole-v1")
    reset_key, _ = jax.random.split(jax.random.fold_in(state["eval_rng"], state["step"]))
    keys = env_keys(reset_key, (task.eval_episodes,), task.env_rng)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    model = nnx.merge(task.graphdef, state["params"])

    def step(carry, _):
        obs, env_state, alive, length = carry
        action = jnp.argmax(model(obs)[0].logits, axis=-1)
        obs, env_state, _, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            keys, env_state, action, params
        )
        return (obs, env_state, alive & ~(terminated | truncated), length + alive), None

    alive = jnp.ones(task.eval_episodes, bool)
    carry = (obs, env_state, alive, jnp.zeros(task.eval_episodes))
    (_, _, alive, length), _ = jax.lax.scan(step, carry, None, length=params.max_steps_in_episode)
    assert not alive.any()
    return float(length.mean())


@needs.gymnax
def test_ppo_learns_cartpole_far_beyond_random(cartpole_ppo) -> None:
    """150 iterations of 4x32 steps (~19k env steps): random play averages ~22."""
    _, init, chunk, evaluate = cartpole_ppo
    state = init(jax.random.PRNGKey(1))
    returns = []
    for _ in range(15):
        state, metrics = chunk(state)
        returns.append(np.asarray(metrics["return"]))
    assert float(np.mean(np.concatenate(returns)[-20:])) > 100
    assert float(evaluate(state)["return"]) > 100


@needs.gymnax
def test_ppo_gaussian_policy_on_pendulum_with_wrappers() -> None:
    """Reward scaling changes what PPO learns from, not the returns it reports: the first rollout
    (same start, same policy) reports the same raw return with and without it."""
    runs = {}
    for scale in (False, True):
        env = _env("Pendulum-v1", normalize_obs=True, scale_reward=scale, params={"max_steps_in_episode": 10})
        task = _ppo(env, num_steps=16, update_epochs=1, num_minibatches=1)
        state = jax.jit(task.init)(jax.random.PRNGKey(0))
        assert "log_std" in state["params"]
        runs[scale] = _chunk(task, 1)(state)[1]
    raw, scaled = runs[False], runs[True]
    # Each of the 4 envs finished a 10-step episode; a Pendulum step pays between -16.3 and 0.
    assert -163 < float(raw["return"][0]) < 0
    np.testing.assert_allclose(scaled["return"], raw["return"], rtol=1e-6)
    assert np.isfinite(np.asarray(scaled["loss"])).all()
    assert not np.allclose(scaled["value_loss"], raw["value_loss"])  # the critic sees scaled rewards


@needs.gymnax
def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="num_minibatches=3 must divide"):
        _ppo(num_minibatches=3)
    with pytest.raises(ConfigError, match="needs an environment"):
        PPO(ActorCritic, _adam(), 10, None, **PPO_ARGS)
    with pytest.raises(ConfigError, match="env_rng"):
        _ppo(env_rng="philox")
    with pytest.raises(ConfigError, match="discrete actions"):
        DQN(QNetwork, _adam(), 10, _env("Pendulum-v1"), **DQN_ARGS)


@needs.gymnax
def test_dqn_waits_for_learning_starts_then_updates_and_syncs_the_target() -> None:
    task = DQN(
        functools.partial(QNetwork, hidden_sizes=(32,), activation="relu"),
        _adam(1e-3),
        20,
        _env(),
        **DQN_ARGS,
    )
    state = jax.jit(task.init)(jax.random.PRNGKey(0))
    chunk = _chunk(task, 1)
    for _ in range(4):  # 4 chunks x 2 steps x 4 envs = 32 env steps < learning_starts=40
        before = state
        state, metrics = chunk(state)
        np.testing.assert_array_equal(before["params"]["head"]["kernel"], state["params"]["head"]["kernel"])
    assert int(state["env_steps"]) == 32 and int(state["buffer"]["size"]) == 32
    state, _ = chunk(state)  # 40 env steps: learning starts
    assert not np.array_equal(before["params"]["head"]["kernel"], state["params"]["head"]["kernel"])
    assert not np.array_equal(state["params"]["head"]["kernel"], state["target_params"]["head"]["kernel"])
    state, _ = chunk(state)  # step 6: a multiple of target_update_every=3, a hard copy
    np.testing.assert_array_equal(state["params"]["head"]["kernel"], state["target_params"]["head"]["kernel"])
    assert 0.1 < float(metrics["epsilon"][-1]) < 1.0
    sums = jax.jit(task.eval_step)(state)
    assert float(sums["episodes"]) == 4


@needs.gymnax
@pytest.mark.parametrize("double", [True, False])
def test_dqn_bootstraps_from_the_double_or_the_vanilla_target(double: bool) -> None:
    """Double DQN values the online network's best next action with the target network; vanilla
    DQN (task.double_dqn=false) takes the target network's own maximum."""
    q_net = functools.partial(QNetwork, hidden_sizes=(32,), activation="relu")
    task = DQN(q_net, _adam(), 20, _env(), **{**DQN_ARGS, "double_dqn": double})
    params = jax.jit(task.init)(jax.random.PRNGKey(0))["params"]
    target_params = jax.jit(task.init)(jax.random.PRNGKey(1))["params"]  # a target that lags behind
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    batch = {
        "obs": jax.random.normal(keys[0], (64, 4)),
        "next_obs": jax.random.normal(keys[1], (64, 4)),
        "action": jax.random.randint(keys[2], (64,), 0, 2),
        "reward": jnp.ones(64),
        "terminated": (jax.random.uniform(keys[3], (64,)) < 0.2).astype(jnp.float32),
    }
    online, target = nnx.merge(task.graphdef, params), nnx.merge(task.graphdef, target_params)
    rows = jnp.arange(64)
    picked = jnp.argmax(online(batch["next_obs"]), -1)
    next_q = target(batch["next_obs"])
    assert (picked != jnp.argmax(next_q, -1)).any(), "the two targets differ on this batch"
    next_value = next_q[rows, picked] if double else next_q.max(-1)
    td_target = batch["reward"] + DQN_ARGS["gamma"] * (1 - batch["terminated"]) * next_value
    expected = jnp.mean((online(batch["obs"])[rows, batch["action"]] - td_target) ** 2)
    loss, _ = task._loss(params, target_params, batch)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


@needs.gymnax
def test_double_dqn_false_reaches_the_task() -> None:
    from research.config import compose_train
    from research.experiment import build

    for value, expected in (("true", True), ("false", False)):
        cfg = compose_train(["+experiment=cartpole_dqn", f"task.double_dqn={value}", "logger=none"])
        assert build(cfg).task.double_dqn is expected
