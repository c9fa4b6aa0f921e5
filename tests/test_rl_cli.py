"""RL recipes end to end through ``python -m research.train``: records, seeds, errors, resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from tests import needs
from tests.checkpoints import ENDLESS, assert_same_final_state, final_state, latest_checkpoint, signal_run
from tests.conftest import TINY, run_train

pytestmark = needs.gymnax

FAST = (*TINY, "trainer.compile_cache=null")


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_cartpole_ppo_writes_returns_speed_and_curves_for_each_seed(run_dir: Path) -> None:
    run_train(
        "+experiment=cartpole_ppo",
        "+debug=fast",
        "trainer.num_seeds=2",
        "trainer.plots=true",
        "task.num_steps=16",
        *FAST,
        f"hydra.run.dir={run_dir}",
    )
    summary = _summary(run_dir)
    assert summary["steps"] == 8 and summary["num_seeds"] == 2
    assert summary["env_steps_per_s"] > 0 and summary["compile_s"] > 0
    records = {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    assert list(records) == [4, 8] and all(len(r["train/return_per_seed"]) == 2 for r in records.values())
    # Greedy evaluation is a function of the state and step: the final one, of the best state,
    # repeats the periodic one of the best step exactly. The train return is the last record's.
    best = records[summary["best_step"]]
    assert summary["eval/return_per_seed"] == best["eval/return_per_seed"]
    assert summary["eval/return"] == best["eval/return"]
    assert summary["eval/return"] == pytest.approx(np.mean(best["eval/return_per_seed"]))
    assert summary["train/return"] == records[8]["train/return"]
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 0
    assert (run_dir / "checkpoints" / "8").is_dir()


def test_bad_env_settings_fail_with_one_line(run_dir: Path) -> None:
    proc = run_train(
        "+experiment=cartpole_ppo", "env.id=CartPole-v9", *FAST, f"hydra.run.dir={run_dir}", check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "env.id='CartPole-v9' is not a gymnax environment" in proc.stderr
    proc = run_train(
        "+experiment=cartpole_ppo", "task.num_minibatches=3", *FAST, f"hydra.run.dir={run_dir}", check=False
    )
    assert proc.returncode == 2 and "task.num_minibatches=3 must divide" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, overrides",
    [
        (
            "cartpole_dqn",
            (
                "trainer.max_steps=60",
                "task.learning_starts=100",
                "trainer.steps_per_call=20",
                "trainer.log_every=20",
                "trainer.eval_every=60",
            ),
        ),
        (
            "breakout_minatar_ppo",
            ("+debug=fast", "task.num_envs=8", "task.num_steps=16", "task.num_minibatches=4"),
        ),
        ("pendulum_ppo", ("+debug=fast", "task.num_steps=16", "task.num_minibatches=4")),
    ],
)
def test_other_rl_recipes_run_end_to_end(recipe: str, overrides: tuple, run_dir: Path) -> None:
    run_train(f"+experiment={recipe}", *overrides, *FAST, f"hydra.run.dir={run_dir}")
    summary = _summary(run_dir)
    assert np.isfinite(summary["eval/return"]) and np.isfinite(summary["train/return"])
    assert summary["env_steps_per_s"] > 0


# One PPO iteration per call and a record per call; a constant learning rate, so that the
# interrupted run can be endless (only the kill ends it) and the rerun sets the real length.
RESUME_ARGS = (
    "+experiment=cartpole_ppo",
    "optimizer/schedule=constant",
    "task.num_steps=16",
    "task.eval_episodes=2",
    "trainer.steps_per_call=1",
    "trainer.log_every=1",
    "trainer.eval_every=30",
    "trainer.checkpoint.every=30",
    *FAST,
)
STEPS = 300


@pytest.mark.slow
def test_killed_ppo_run_resumes_with_env_and_optimizer_state(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(*RESUME_ARGS, f"trainer.max_steps={STEPS}", f"hydra.run.dir={straight}")

    signal_run(
        (*RESUME_ARGS, ENDLESS, f"hydra.run.dir={killed}"),
        lambda: latest_checkpoint(killed) >= 30,
        signal.SIGKILL,
    )
    assert 30 <= latest_checkpoint(killed) < STEPS

    run_train(*RESUME_ARGS, f"trainer.max_steps={STEPS}", f"hydra.run.dir={killed}")
    state = final_state(straight)
    assert any("env_state" in k for k in state) and any("opt_state" in k for k in state)
    assert_same_final_state(straight, killed)
    assert _summary(killed)["steps"] == STEPS
