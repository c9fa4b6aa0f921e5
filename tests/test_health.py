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
    tx = make_optimizer(CFG, 8, health=True)  # stepped by hand (no engine): every update measures
    plain = make_optimizer(CFG, 8)
    params = _params()
    state, plain_state = tx.init(params), plain.init(params)
    update, plain_update = jax.jit(tx.update), jax.jit(plain.update)
    for i in range(3):
        grads = _grads(i)
        updates, state = update(grads, state, params)
        expected, plain_state = plain_update(grads, plain_state, params)
        for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)  # watching changes nothing of the update
        record = signals(_Task(), {"params": params, "opt_state": state})
        assert record["train/grad_norm"] == pytest.approx(float(optax.global_norm(grads)), rel=1e-6)
        assert record["train/grad_norm/head"] == pytest.approx(
            float(optax.global_norm(grads["head"])), rel=1e-6
        )
        assert record["train/param_norm"] == pytest.approx(float(optax.global_norm(params)), rel=1e-6)
        ratio = optax.global_norm(updates) / optax.global_norm(params)
        assert record["train/update_ratio"] == pytest.approx(float(ratio), rel=1e-5)
        hidden = optax.global_norm(updates["hidden"]) / optax.global_norm(params["hidden"])
        assert record["train/update_ratio/hidden"] == pytest.approx(float(hidden), rel=1e-5)
        params = optax.apply_updates(params, updates)
    assert set(watch.find(state).grad_norm) == {"hidden", "head"}


class _LinearTask(_Task):
    """loss = <w, x>: the gradient of a step is its batch row, whatever the parameters."""

    def __init__(self) -> None:
        self.tx = make_optimizer(CFG, 8, health=True)

    def init(self, rng: jax.Array, example: jax.Array) -> dict:
        params = {"hidden": {"kernel": jnp.zeros(3)}, "head": {"bias": jax.random.normal(rng, (2,))}}
        return {"params": params, "opt_state": self.tx.init(params)}

    def train_step(self, state: dict, x: jax.Array) -> tuple[dict, dict]:
        loss_fn = lambda p: jnp.dot(p["hidden"]["kernel"], x[:3]) + jnp.dot(p["head"]["bias"], x[3:])  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, {"loss": loss}


@pytest.mark.parametrize("seeds", [1, 2])
def test_the_last_step_of_a_call_measures_and_the_others_carry_no_branch(seeds: int) -> None:
    from research.engine.replicas import Replicas
    from research.engine.steps import Programs

    task, replicas = _LinearTask(), Replicas(num_seeds=seeds)
    rows = jnp.arange(40.0).reshape(8, 5) - 7  # the batch of step i is row i
    programs = Programs(task, lambda data, x: data[x], replicas, per_seed_data=False, state_sharding=None)
    state = programs.init(replicas.rngs(0), rows[0])
    for first in (0, 4):  # two calls of 4 steps
        state, metrics = programs.train(state, rows, jnp.arange(first, first + 4, dtype=jnp.int32))
        assert np.asarray(metrics["loss"]).shape[0] == 4
        record = signals(task, state)
        last = rows[first + 3]
        assert record["train/grad_norm"] == pytest.approx(float(optax.global_norm(last)), rel=1e-6)
        assert record["train/grad_norm/head"] == pytest.approx(float(optax.global_norm(last[3:])), rel=1e-6)
    assert np.all(np.asarray(watch.find(state["opt_state"]).count) == 8)  # every update counted
    # No lax.cond chooses whether to measure: on the CPU it breaks the update's fused loop, and
    # under vmap it becomes a select that computes the norms on every step.
    jaxpr = programs._chunk.trace(state, rows, jnp.arange(4, dtype=jnp.int32)).jaxpr
    assert "cond[" not in str(jaxpr)


def test_the_first_non_finite_gradient_names_its_group_and_update() -> None:
    tx = make_optimizer(CFG, 8, health=True, blame=True)
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


def test_without_the_per_update_check_a_nan_says_how_to_name_its_group() -> None:
    tx = make_optimizer(CFG, 8, health=True)  # trainer.blame_nonfinite=false, the default
    params = _params()
    state = tx.init(params)
    nan = jax.tree.map(lambda g: g * jnp.nan, _grads(0))
    _, state = jax.jit(tx.update)(nan, state, params)
    assert int(watch.find(state).bad_update) == 0  # nothing checked, nothing recorded
    said = blame(_Task(), {"params": params, "opt_state": state}, checked=False)
    assert said == "; trainer.blame_nonfinite=true names the layer group whose gradient went non-finite first"
    assert blame(_Task(), {"params": params}, checked=False) == ""  # no signals kept: nothing to say


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
