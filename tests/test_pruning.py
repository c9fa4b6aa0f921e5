"""Magnitude pruning (optimizer.prune): the schedule is Zhu and Gupta's formula, the masks land as zeros
in the parameters on it, and what a run reports is what its checkpoint holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import prune
from research.errors import ConfigError
from research.optim import make_optimizer, param_path
from tests.conftest import TINY, run_train

SETTINGS = {"sparsity": 0.9, "initial_sparsity": 0.1, "begin_step": 10, "end_step": 50, "frequency": 5}


def test_the_schedule_is_the_cubic_formula_and_fractions_are_of_the_run() -> None:
    settings = prune.settings_from_config(SETTINGS, 200)
    # s_t = s_f + (s_i - s_f) (1 - (t - begin) / (end - begin))^3, held outside [begin, end]
    expected = {0: 0.1, 10: 0.1, 20: 0.9 - 0.8 * 0.75**3, 30: 0.9 - 0.8 * 0.5**3, 50: 0.9, 120: 0.9}
    for step, value in expected.items():
        assert float(prune.sparsity_at(settings, step)) == pytest.approx(value, abs=1e-6), step
    fractions = prune.settings_from_config({**SETTINGS, "begin_step": 0.1, "end_step": 0.6}, 200)
    assert (fractions.begin, fractions.end) == (20, 120)


def test_the_parameters_hold_the_scheduled_zeros_and_biases_stay_dense() -> None:
    cfg = {"_target_": "optax.sgd", "learning_rate": 0.1, "prune": {**SETTINGS, "scope": "layer"}}
    tx = make_optimizer(cfg, 100)
    params = {
        "dense": {"kernel": jnp.ones((20, 50)), "bias": jnp.ones(50)},
        "head": {"kernel": jnp.ones((50, 3))},
    }
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads_at = jax.random.split(jax.random.PRNGKey(0), 60)
    for step in range(60):
        grads = jax.tree.map(lambda p, k=grads_at[step]: jax.random.normal(k, p.shape), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        due = step >= 10 and (step - 10) % 5 == 0
        last_due = min(step, 50) - (min(step, 50) - 10) % 5 if step >= 10 else None
        for path, w in jax.tree_util.tree_leaves_with_path(params):
            zeros = int((np.asarray(w) == 0).sum())
            if param_path(path) == "dense/bias" or last_due is None:
                assert zeros == 0, (step, param_path(path))
                continue
            target = float(prune.sparsity_at(prune.settings_from_config(SETTINGS, 100), last_due))
            assert zeros == int(np.floor(np.float32(target) * w.size)), (step, due, param_path(path))
    reported = prune.sparsity(prune.find(state))
    assert reported["dense/kernel"] == pytest.approx(0.9) and reported["head/kernel"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({**SETTINGS, "sparsity": 1.0}, "optimizer.prune.sparsity=1.0 must be a fraction in [0, 1)"),
        ({**SETTINGS, "sparsity": -0.1}, "optimizer.prune.sparsity=-0.1 must be a fraction in [0, 1)"),
        ({**SETTINGS, "begin_step": 60}, "optimizer.prune.begin_step (60 updates) must come before end_step"),
        ({**SETTINGS, "scope": "model"}, "optimizer.prune.scope='model' must be one of"),
        ({**SETTINGS, "frequency": 0}, "optimizer.prune.frequency=0 must be an integer >= 1"),
        ({**SETTINGS, "amount": 1}, "optimizer.prune must be null or a mapping with keys"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)) as raised:
        prune.settings_from_config(settings, 100)
    assert "\n" not in str(raised.value)


def test_a_pattern_that_matches_no_kernel_is_one_line() -> None:
    tx = make_optimizer(
        {"_target_": "optax.sgd", "learning_rate": 0.1, "prune": {**SETTINGS, "params": ["convv"]}}, 100
    )
    with pytest.raises(ConfigError, match=r"optimizer.prune.params=\['convv'\] matches no parameter"):
        tx.init({"conv": {"kernel": jnp.ones((3, 3, 1, 4))}})


def test_a_learning_rate_grid_with_pruning_is_one_line() -> None:
    from omegaconf import OmegaConf

    from research import config

    grid = {"vmap_over": "optimizer.learning_rate", "vmap_values": [1e-3, 1e-2]}
    cfg = OmegaConf.create({"optimizer": {"prune": SETTINGS}, "trainer": grid})
    with pytest.raises(ConfigError, match="^optimizer.prune does not combine with trainer.vmap_over"):
        config.check(cfg)


def test_sparsity_outside_the_unit_interval_stops_the_command_line_before_a_run_directory(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    proc = run_train(
        "+experiment=digits_cnn", "+optimizer/prune=magnitude", "optimizer.prune.sparsity=1.0", *TINY,
        f"hydra.run.dir={run_dir}", check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: optimizer.prune.sparsity=1.0 must be a fraction in [0, 1), e.g. 0.9 for 90% zeros"
    ]
    assert not run_dir.exists()


def test_the_reported_sparsity_is_true_of_the_saved_parameters(tmp_path: Path) -> None:
    from research.experiment import open_saved

    run_dir = tmp_path / "run"
    run_train(
        "+experiment=digits_cnn", "trainer.max_steps=40", "trainer.log_every=8", "trainer.eval_every=40",
        "+optimizer/prune=magnitude", "optimizer.prune.sparsity=0.75", "optimizer.prune.begin_step=0.2",
        "optimizer.prune.end_step=0.6", "optimizer.prune.frequency=4", *TINY, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    params = open_saved(run_dir, checkpoint="latest").state["params"]
    counted, zeros, total = {}, 0, 0
    for path, w in jax.tree_util.tree_leaves_with_path(params):
        name, w = param_path(path), np.asarray(w)
        if name.endswith("kernel"):
            counted[name] = (w == 0).mean()
            zeros, total = zeros + (w == 0).sum(), total + w.size
        else:
            assert (w != 0).any(), name
    reported = {
        k.removeprefix("train/sparsity/"): v for k, v in summary.items() if k.startswith("train/sparsity/")
    }
    assert reported.keys() == counted.keys() and len(counted) == 4
    for name, fraction in counted.items():
        assert reported[name] == pytest.approx(fraction, abs=1e-9), name
        assert fraction == pytest.approx(0.75, abs=0.01), name
    assert summary["train/sparsity"] == pytest.approx(zeros / total, abs=1e-9)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["train/sparsity"] for r in records if "train/sparsity" in r]
    assert len(logged) >= 4 and logged[0] < 0.75 and logged == sorted(logged)
