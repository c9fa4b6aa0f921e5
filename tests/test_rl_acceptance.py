"""The RL recipes reach their stated returns (full-length runs: slow).

``pytest -m slow -s tests/test_rl_acceptance.py`` prints the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests import needs
from tests.conftest import TINY, run_train

pytestmark = [pytest.mark.slow, needs.gymnax]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def last_fraction_returns(
    records: list[dict], total_steps: int, window: int, fraction: float = 0.1
) -> np.ndarray:
    """Per-seed mean train return of the records whose window lies in the last ``fraction`` of steps."""
    start = total_steps * (1 - fraction)
    rows = [
        r["train/return_per_seed"]
        for r in records
        if "train/return_per_seed" in r and r["step"] - window >= start
    ]
    return np.mean(rows, axis=0)


def test_cartpole_ppo_reaches_the_maximum_500_for_5_of_5_seeds(run_dir: Path) -> None:
    """The README's row: greedy evaluation returns 500, the maximum, for each of 5 seeds (vmapped in
    one program; PureJaxRL's standard configuration; records every 8 iterations)."""
    run_train(
        "+experiment=cartpole_ppo",
        "trainer.num_seeds=5",
        "trainer.steps_per_call=8",
        "trainer.log_every=8",
        "trainer.eval_every=488",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    task, opt = config["task"], config["optimizer"]
    assert (task["num_envs"], task["num_steps"], task["update_epochs"], task["num_minibatches"]) == (
        4,
        128,
        4,
        4,
    )
    assert opt["learning_rate"] == 2.5e-4 and opt["schedule"]["_target_"] == "optax.linear_schedule"
    assert opt["schedule"]["end_value"] == 0.0 and opt["clip_norm"] == 0.5
    steps = config["trainer"]["max_steps"]
    assert steps * 4 * 128 == 499_712  # 5e5 env steps in whole iterations
    returns = last_fraction_returns(_records(run_dir), steps, 8)
    summary = json.loads((run_dir / "summary.json").read_text())
    print(
        f"\ncartpole_ppo last-10% train return per seed: {np.round(returns, 1).tolist()}; "
        f"greedy eval per seed: {summary['eval/return_per_seed']}; wall {summary['wall_s']:.1f} s"
    )
    assert summary["eval/return_per_seed"] == [500.0] * 5
    assert (returns >= 475).all()  # and each seed's training episodes end near the maximum too


def test_cartpole_dqn_reaches_475(run_dir: Path) -> None:
    run_train("+experiment=cartpole_dqn", *TINY, f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    print(
        f"\ncartpole_dqn greedy eval {summary['eval/return']}, "
        f"last train return {summary['train/return']:.1f}, wall {summary['wall_s']:.1f} s"
    )
    assert summary["eval/return"] >= 475


def random_play_return(env_id: str, num_envs: int = 256, steps: int = 2000) -> float:
    """Mean return of the episodes uniformly random actions finish in ``steps`` steps of ``num_envs`` envs."""
    import jax
    import jax.numpy as jnp

    from research.envs import make
    from research.tasks.rl_common import env_keys

    env = make({"id": env_id, "params": {}, "normalize_obs": False, "scale_reward": False})

    def run(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        _, state = env.reset(env_keys(key, (num_envs,), "unsafe_rbg"))

        def step(state, key):
            action_key, env_key = jax.random.split(key)
            action = jax.random.randint(action_key, (num_envs,), 0, env.action_dim)
            _, state, _, _, _, info = env.step(env_keys(env_key, (num_envs,), "unsafe_rbg"), state, action)
            return state, (jnp.where(info["done"], info["episode_return"], 0.0).sum(), info["done"].sum())

        _, (total, count) = jax.lax.scan(step, state, jax.random.split(key, steps))
        return total.sum(), count.sum()

    total, count = jax.jit(run)(jax.random.PRNGKey(0))
    return float(total / count)


def test_breakout_minatar_ppo_beats_random_play_by_a_wide_margin(run_dir: Path) -> None:
    random_return = random_play_return("Breakout-MinAtar")
    run_train("+experiment=breakout_minatar_ppo", *TINY, f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    print(
        f"\nbreakout_minatar_ppo greedy eval {summary['eval/return']}, train {summary['train/return']:.2f}, "
        f"random play {random_return:.2f}, wall {summary['wall_s']:.1f} s"
    )
    assert summary["eval/return"] >= 10 * max(random_return, 1.0)
