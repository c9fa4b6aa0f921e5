"""Training-health signals: the norms the optimizer keeps are those of the gradients, parameters and
updates it saw; they reach the records; a non-finite gradient is traced to its layer group."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import watch
from research.engine.health import blame, signals
from research.optim import make_optimizer
from tests.conftest import TINY, run_train

CFG = {"_target_": "optax.adam", "learning_rate": 0.01, "clip_norm": 1.0}


class _Task:
    optimized = (("params", "opt_state"),)


def _params() -> dict:
    return {
        "hidden": {"0": {"kernel": jnp.arange(12.0).reshape(3, 4) / 7}, "1": {"bias": jnp.ones(4)}},
        "head": {"kernel": jnp.full((4, 2), -0.5)},
    }


def _grads(seed: int) -> dict:
    leaves, tree = jax.tree.flatten(_params())
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [10 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
    )


def test_the_norms_are_those_of_the_gradients_parameters_and_updates() -> None:
    tx = make_optimizer(CFG, 8, health_every=2)
    plain = make_optimizer(CFG, 8)
    params = _params()
    state, plain_state = tx.init(params), plain.init(params)
    for i in range(4):
        grads = _grads(i)
        updates, state = jax.jit(tx.update)(grads, state, params)
        expected, plain_state = plain.update(grads, plain_state, params)
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)  # watching changes nothing of the update
        record = signals(_Task(), {"params": params, "opt_state": state})
        assert record["train/grad_norm"] == pytest.approx(float(optax.global_norm(grads)), rel=1e-6)
        assert record["train/grad_norm/head"] == pytest.approx(
            float(optax.global_norm(grads["head"])), rel=1e-6
        )
        if (i + 1) % 2:  # off the interval the parameter and update norms are not computed
            continue
        assert record["train/param_norm"] == pytest.approx(float(optax.global_norm(params)), rel=1e-6)
        ratio = optax.global_norm(updates) / optax.global_norm(params)
        assert record["train/update_ratio"] == pytest.approx(float(ratio), rel=1e-5)
        hidden = optax.global_norm(updates["hidden"]) / optax.global_norm(params["hidden"])
        assert record["train/update_ratio/hidden"] == pytest.approx(float(hidden), rel=1e-5)
        params = optax.apply_updates(params, updates)
    assert set(watch.find(state).grad_norm) == {"hidden", "head"}


def test_the_first_non_finite_gradient_names_its_group_and_update() -> None:
    tx = make_optimizer(CFG, 8, health_every=4)
    params, state = _params(), None
    state = tx.init(params)
    update = jax.jit(tx.update)
    for i in range(6):
        grads = _grads(i)
        if i == 2:  # update 3: the head's gradient overflows first
            grads["head"]["kernel"] = grads["head"]["kernel"].at[0, 0].set(jnp.inf)
        if i >= 3:  # then everything is NaN
            grads = jax.tree.map(lambda g: g * jnp.nan, grads)
        _, state = update(grads, state, params)
        if i == 1:
            assert blame(_Task(), {"params": params, "opt_state": state}) == ""
    said = blame(_Task(), {"params": params, "opt_state": state})
    assert said == "; the gradient of head first went non-finite at update 3"
    _, state = update(_grads(9), state, params)  # finite again: the record is cleared
    assert blame(_Task(), {"params": params, "opt_state": state}) == ""


@pytest.mark.slow
def test_a_run_records_the_signals_at_each_log_and_a_gan_per_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "mlp"
    run_train("+experiment=digits_mlp", "+debug=fast", *TINY, f"hydra.run.dir={run_dir}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "train/loss" in r]
    assert logged and all(r["train/grad_norm"] > 0 and r["train/update_ratio"] > 0 for r in logged)
    assert all(r["train/param_norm/hidden"] > 0 and "train/grad_norm/head" in r for r in logged)

    gan_dir = tmp_path / "gan"
    run_train(
        "+experiment=digits_dcgan", "+debug=fast", "trainer.num_seeds=2", *TINY, f"hydra.run.dir={gan_dir}"
    )  # fmt: skip
    summary = json.loads((gan_dir / "summary.json").read_text())
    for model in ("generator", "discriminator"):
        assert summary[f"train/{model}/grad_norm"] > 0
        assert len(summary[f"train/{model}/param_norm_per_seed"]) == 2
