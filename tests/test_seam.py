"""The task seam: a task written here, with its own data, evaluators and image, runs through the CLI.

Nothing in the engine knows this task: its metric names, the metric early stopping
watches and its image come from its declarations. The configs live in a folder of
the test's own, passed with --config-dir, as a user's would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import images
from research.data.arrays import ArraySplit, identity_transform
from research.data.base import EVAL_WEIGHT, Dataset
from research.engine.api import Result
from research.engine.init_from import read_arrays
from research.evaluators.collect import Collect
from research.evaluators.sums import Sums
from research.tasks.base import TaskBase
from tests.conftest import ROOT, run_train


def toy_data(num_examples: int, dim: int, noise: float, seed: int, batch_size: int) -> Dataset:
    """y = x . w + noise, split 70/15/15."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, dim)).astype(np.float32)
    w = rng.normal(size=(dim,)).astype(np.float32)
    y = (x @ w + noise * rng.normal(size=num_examples)).astype(np.float32)
    cut = [int(num_examples * 0.7), int(num_examples * 0.85)]
    parts = np.split(np.arange(num_examples), cut)
    splits = {
        name: ArraySplit({"x": x[i], "y": y[i]})
        for name, i in zip(("train", "val", "test"), parts, strict=True)
    }
    return Dataset("toy", (dim,), None, splits, identity_transform, batch_size, 64)


class ToyRegression(TaskBase):
    """Linear regression by gradient descent: MSE as a sum, R^2 and a scatter image from a full pass."""

    metric = "val/mse"

    def __init__(self, make_optimizer, total_steps: int, dataset: Dataset):
        self.tx = make_optimizer(total_steps)
        self.dim = dataset.input_shape[0]

    def init(self, rng, batch):
        params = {"w": jnp.zeros((self.dim,)), "b": jnp.zeros(())}
        return {"step": jnp.int32(0), "params": params, "opt_state": self.tx.init(params), "rng": rng}

    def predict(self, params, x):
        return x @ params["w"] + params["b"]

    def train_step(self, state, batch):
        def loss_fn(params):
            return jnp.mean((self.predict(params, batch["x"]) - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}, {"loss": loss}

    def evaluators(self):
        def sums(state, batch):
            err = (self.predict(state["params"], batch["x"]) - batch["y"]) ** 2
            return {"se": jnp.sum(err * batch[EVAL_WEIGHT]), "n": jnp.sum(batch[EVAL_WEIGHT])}

        def outputs(state, batch):
            return {"pred": self.predict(state["params"], batch["x"]), "y": batch["y"]}

        def fit_report(arrays):
            pred, y = arrays["pred"], arrays["y"]
            r2 = 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)
            plt = images.pyplot()
            fig, ax = plt.subplots(figsize=(3, 3), dpi=50)
            ax.scatter(y, pred, s=4)
            return Result(
                {"r2": np.float32(r2), "count": np.float32(len(y))}, {"scatter": images.figure_array(fig)}
            )

        return {
            "mse": Sums(sums, lambda s: {"mse": s["se"] / s["n"]}, ("mse",)),
            "fit": Collect(outputs, fit_report, ("r2", "count")),
        }


def write_configs(folder: Path) -> Path:
    (folder / "task").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "experiment").mkdir()
    (folder / "task" / "toy_regression.yaml").write_text("_target_: tests.test_seam.ToyRegression\n")
    (folder / "data" / "toy.yaml").write_text(
        "_target_: tests.test_seam.toy_data\nnum_examples: 400\ndim: 5\nnoise: 0.1\nseed: 0\nbatch_size: 16\n"
    )
    (folder / "experiment" / "toy.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /task: toy_regression\n  - override /data: toy\n"
        "  - override /optimizer/schedule: constant\n"
        "name: toy\noptimizer:\n  learning_rate: 0.05\n"
        "trainer:\n  max_steps: 80\n  eval_every: 20\n  log_every: 20\n  steps_per_call: 10\n"
        "  checkpoint:\n    every: 40\n"
        "logger:\n  wandb: null\n"
    )
    return folder


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    return write_configs(tmp_path / "my_configs")


def toy(configs: Path, run_dir: Path, *overrides: str, check: bool = True):
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = ("--config-dir", str(configs), "+experiment=toy", f"hydra.run.dir={run_dir}", *overrides)
    return run_train(*args, env=env, check=check)


def test_a_task_of_its_own_trains_evaluates_and_draws(configs: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    toy(configs, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 80
    assert summary["test/mse"] < 0.05  # the noise variance is 0.01; predicting 0 gives ~5
    assert summary["test/r2"] > 0.99
    assert summary["test/count"] == 60  # every test example once, padding dropped
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val/mse" in r]
    assert [r["step"] for r in val] == [20, 40, 60, 80]
    assert val[-1]["val/mse"] < val[0]["val/mse"]
    assert summary["best_step"] == min(val, key=lambda r: r["val/mse"])["step"]
    assert (run_dir / "plots" / "scatter.png").stat().st_size > 0
    assert sorted(p.name for p in (run_dir / "plots" / "val_scatter").iterdir()) == [
        f"{s:08d}.png" for s in (20, 40, 60, 80)
    ]


def test_a_task_of_its_own_resumes_bit_identically(configs: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    toy(configs, straight)
    toy(configs, resumed, "trainer.max_steps=40")
    proc = toy(configs, resumed)
    assert "continuing" in proc.stdout and "trainer.max_steps: 40 -> 80" in proc.stdout
    assert f"resuming from step 40 ({resumed / 'checkpoints' / '40'})" in proc.stdout
    a = read_arrays(straight / "checkpoints" / "80" / "state")
    b = read_arrays(resumed / "checkpoints" / "80" / "state")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_an_early_stopping_metric_the_task_does_not_produce_is_one_line(
    configs: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = toy(configs, run_dir, "trainer.early_stopping.metric=val/accuracy", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: trainer.early_stopping.metric='val/accuracy' is not a metric this run evaluates: "
        "choose one of val/count, val/mse, val/r2"
    ]
    assert not run_dir.exists()  # found while building, before Hydra made the directory


MY_NET = """
from flax import nnx


class TinyNet(nnx.Module):
    def __init__(self, input_shape, num_outputs, width, *, rngs):
        import math

        self.hidden = nnx.Linear(math.prod(input_shape), width, rngs=rngs)
        self.head = nnx.Linear(width, num_outputs, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))
"""


def test_a_users_own_recipe_and_model_outside_the_project_train(tmp_path: Path) -> None:
    package, configs = tmp_path / "my_code", tmp_path / "my_configs"
    package.mkdir()
    (package / "my_models.py").write_text(MY_NET)
    (configs / "model").mkdir(parents=True)
    (configs / "experiment").mkdir()
    (configs / "model" / "my_net.yaml").write_text("_target_: my_models.TinyNet\nwidth: 32\n")
    (configs / "experiment" / "my_recipe.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: my_net\nname: my_recipe\n"
        "optimizer:\n  learning_rate: 1e-2\ntrainer:\n  max_steps: 40\n  eval_every: 20\n"
        "logger:\n  wandb: null\n"
    )
    env = {"PYTHONPATH": str(package)}
    run_dir = tmp_path / "run"
    args = ("--config-dir", str(configs), "+experiment=my_recipe", "trainer.progress=false")
    proc = run_train(*args, f"hydra.run.dir={run_dir}", env=env)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert summary["test/accuracy"] > 0.5
    # the flags after the overrides, as a user may write them
    again = run_train(*args[2:], f"hydra.run.dir={run_dir}", *args[:2], env=env)
    assert "is finished (step 40)" in again.stdout and proc.returncode == 0
    bad = run_train(*args, "model.depth=3", f"hydra.run.dir={tmp_path / 'bad'}", env=env, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "model.depth" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    listed = run_train("--config-dir", str(configs), "--help", env=env)
    assert "my_net" in listed.stdout and "my_recipe" in listed.stdout
