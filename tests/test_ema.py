"""Polyak (EMA) weights: the average kept in the optimizer state is a hand-computed EMA of the
parameter trajectory, resumes bit-identically, and is what evaluation and research.evaluate use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import ema
from research.engine import averaging
from research.errors import ConfigError
from research.optim import make_optimizer
from tests.checkpoints import assert_same_final_state
from tests.conftest import ROOT, TINY, run_train

STEPS = 10


def _trajectory(cfg: dict) -> tuple[list, object]:
    """The parameters each of ``STEPS`` SGD updates starts from, and the state after them."""
    tx = make_optimizer(cfg, STEPS)
    params = {"hidden": jnp.arange(6.0).reshape(2, 3), "head": jnp.ones(3)}
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s2: (optax.apply_updates(p, u), s2))(*tx.update(g, s, p)))
    seen = []
    for i in range(STEPS):
        grads = jax.tree.map(lambda a, i=i: jnp.sin(a + i), params)  # a different gradient each step
        seen.append(params)
        params, state = step(params, state, grads)
    return seen, state


@pytest.mark.parametrize("debias", [False, True])
def test_the_average_is_a_hand_computed_ema_of_the_trajectory(debias: bool) -> None:
    decay = 0.8
    seen, state = _trajectory(
        {"_target_": "optax.sgd", "learning_rate": 0.1, "ema": {"decay": decay, "debias": debias}}
    )
    kept = ema.find(state)
    assert int(kept.count) == STEPS
    for key in ("hidden", "head"):
        trajectory = np.stack([np.asarray(p[key], np.float64) for p in seen])
        if debias:  # the decay-weighted mean of w_0 .. w_9
            weights = decay ** np.arange(STEPS - 1, -1, -1)
            expected = np.tensordot(weights, trajectory, 1) / weights.sum()
        else:  # the textbook recursion from w_0
            expected = trajectory[0]
            for w in trajectory:
                expected = decay * expected + (1 - decay) * w
        np.testing.assert_allclose(np.asarray(kept.ema[key]), expected, rtol=2e-6, atol=1e-6)


def test_no_average_unless_asked_and_bad_settings_are_one_line() -> None:
    _, state = _trajectory({"_target_": "optax.sgd", "learning_rate": 0.1, "ema": {"decay": None}})
    assert ema.find(state) is None
    for bad, match in (
        ({"decay": 1.0}, "optimizer.ema.decay"),
        ({"decay": 0.9, "warmup": 2}, "optimizer.ema"),
    ):
        with pytest.raises(ConfigError, match=match):
            make_optimizer({"_target_": "optax.sgd", "learning_rate": 0.1, "ema": bad}, 4)


class _Task:
    optimized = (("params", "opt_state"),)


def test_exchanging_puts_the_average_in_the_model_place_and_back() -> None:
    _, opt_state = _trajectory({"_target_": "optax.sgd", "learning_rate": 0.1, "ema": {"decay": 0.5}})
    state = {"params": {"hidden": jnp.zeros((2, 3)), "head": jnp.zeros(3)}, "opt_state": opt_state}
    average = ema.find(opt_state).ema
    front = averaging.in_front(_Task(), state, "ema")
    np.testing.assert_array_equal(front["params"]["head"], average["head"])
    np.testing.assert_array_equal(ema.find(front["opt_state"]).ema["head"], np.zeros(3))
    back = averaging.exchange(_Task(), front)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert averaging.in_front(_Task(), state, "raw") is state


RUN = (
    "+experiment=digits_mlp", "+debug=fast", "optimizer.ema.decay=0.9", "trainer.checkpoint.every=4",
    "trainer.plots=false", *TINY,
)  # fmt: skip


def _evaluate(run_dir: Path, *overrides: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "research.evaluate", f"run={run_dir}", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads((run_dir / "eval.json").read_text())


@pytest.mark.slow
def test_a_run_resumes_its_average_bit_identically_and_evaluate_reports_it(tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_train(*RUN, f"hydra.run.dir={straight}")
    run_train(*RUN, "trainer.max_steps=4", f"hydra.run.dir={resumed}")
    run_train(*RUN, f"hydra.run.dir={resumed}")  # on from the checkpoint at step 4
    assert_same_final_state(straight, resumed)  # the average included (opt_state/.../ema/...)

    summary = json.loads((straight / "summary.json").read_text())
    assert summary["test/accuracy"] != summary["test_raw/accuracy"]  # both reported, and they differ
    evaluated = _evaluate(straight)
    assert evaluated["test/accuracy"] == pytest.approx(summary["test/accuracy"], abs=1e-6)
    assert evaluated["test_raw/accuracy"] == pytest.approx(summary["test_raw/accuracy"], abs=1e-6)
    raw = _evaluate(straight, "trainer.eval_weights=raw")
    assert raw["test/accuracy"] == pytest.approx(summary["test_raw/accuracy"], abs=1e-6)
    assert raw["test_ema/accuracy"] == pytest.approx(summary["test/accuracy"], abs=1e-6)


@pytest.mark.parametrize("preset_name", ["fsdp", "tensor_parallel"])
def test_the_average_is_split_over_a_mesh_like_the_parameters(preset_name: str) -> None:
    from research.engine.sharding import compile_rules, leaf_spec
    from research.optim import param_path
    from tests.test_sharding import mesh_of, preset

    params = {"hidden": {"0": {"kernel": jnp.zeros((64, 32))}, "1": {"kernel": jnp.zeros((32, 16))}},
              "head": {"kernel": jnp.zeros((16, 8)), "bias": jnp.zeros(8)}}  # fmt: skip
    tx = make_optimizer({"_target_": "optax.adam", "learning_rate": 0.1, "ema": {"decay": 0.9}}, 8, 4)
    state = jax.eval_shape(lambda: {"params": params, "opt_state": tx.init(params)})
    mesh, rules = mesh_of(fsdp=2, tensor=2), compile_rules(preset(preset_name)["rules"])
    specs = {
        param_path(p): leaf_spec(param_path(p), leaf.shape, rules, mesh)
        for p, leaf in jax.tree_util.tree_leaves_with_path(state)
    }
    averaged = {p.split("/ema/", 1)[1]: s for p, s in specs.items() if "/ema/" in p}
    assert averaged.keys() == {p.removeprefix("params/") for p in specs if p.startswith("params/")}
    assert all(averaged[p] == specs[f"params/{p}"] for p in averaged)
    assert any(s != jax.sharding.PartitionSpec() for s in averaged.values())  # something is split


class _LinearTask(_Task):
    """loss = <w, x> under SGD with a once-per-call average: the gradient of a step is its row."""

    def __init__(self, decay: float) -> None:
        self.tx = make_optimizer(
            {"_target_": "optax.sgd", "learning_rate": 0.1, "ema": {"decay": decay, "every": "call"}}, 8
        )

    def init(self, rng: jax.Array, example: jax.Array) -> dict:
        params = {"w": jax.random.normal(rng, (3,))}
        return {"params": params, "opt_state": self.tx.init(params)}

    def train_step(self, state: dict, x: jax.Array) -> tuple[dict, dict]:
        loss, grads = jax.value_and_grad(lambda p: jnp.dot(p["w"], x))(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, {
            "loss": loss
        }


@pytest.mark.parametrize("seeds", [1, 2])
def test_once_per_call_the_average_samples_each_calls_last_weights(seeds: int) -> None:
    """``every: call``: on the engine's calls of K steps the average mixes in the weights each
    call's last update starts from, with the decay of the K steps (the debiased recursion of the
    trajectory sampled every K steps), and the program holds no ``cond`` for it."""
    from research.engine.replicas import Replicas
    from research.engine.steps import Programs

    decay, calls, per_call = 0.8, 3, 4
    task, replicas = _LinearTask(decay), Replicas(num_seeds=seeds)
    rows = jnp.sin(jnp.arange(3.0 * calls * per_call)).reshape(calls * per_call, 3)
    programs = Programs(task, lambda data, x: data[x], replicas, per_seed_data=False, state_sharding=None)
    state = programs.init(replicas.rngs(0), rows[0])
    w = np.asarray(state["params"]["w"], np.float64)
    expected = np.zeros_like(w)
    for call in range(calls):
        first = call * per_call
        state, _ = programs.train(state, rows, jnp.arange(first, first + per_call, dtype=jnp.int32))
        w = w - 0.1 * np.asarray(rows[first : first + per_call - 1]).sum(0)  # the last update's start
        steps = first + per_call
        expected = expected + (1 - decay**per_call) / (1 - decay**steps) * (w - expected)
        w = w - 0.1 * np.asarray(rows[first + per_call - 1])
    kept = ema.find(state["opt_state"])
    np.testing.assert_array_equal(np.asarray(kept.count), calls * per_call)  # every step counted
    np.testing.assert_allclose(
        np.asarray(kept.ema["w"]), np.broadcast_to(expected, kept.ema["w"].shape), rtol=1e-5
    )
    jaxpr = programs._chunk.trace(state, rows, jnp.arange(per_call, dtype=jnp.int32)).jaxpr
    assert "cond[" not in str(jaxpr)


def test_once_per_call_stepped_by_hand_averages_every_step() -> None:
    """Outside the engine's calls (a task's own loop) ``every: call`` is the per-step average."""
    _, state = _trajectory(
        {"_target_": "optax.sgd", "learning_rate": 0.1, "ema": {"decay": 0.8, "every": "call"}}
    )
    _, reference = _trajectory({"_target_": "optax.sgd", "learning_rate": 0.1, "ema": {"decay": 0.8}})
    for a, b in zip(
        jax.tree.leaves(ema.find(state).ema), jax.tree.leaves(ema.find(reference).ema), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="optimizer.ema.every='epoch' must be one of step, call"):
        make_optimizer(
            {"_target_": "optax.sgd", "learning_rate": 0.1, "ema": {"decay": 0.9, "every": "epoch"}}, 4
        )
