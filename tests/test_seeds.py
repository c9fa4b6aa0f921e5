"""Several seeds and a learning-rate grid as one vmapped program: the summary, equality with single runs."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from research.config import compose_train
from research.engine.replicas import Replicas
from research.errors import ConfigError
from research.experiment import run

STEPS = 32
COMMON = (
    "logger=none",
    f"trainer.max_steps={STEPS}",
    "trainer.eval_every=16",
    "trainer.progress=false",
    "trainer.plots=false",
    "trainer.checkpoint.enabled=false",
    "trainer.compile_cache=null",
    "optimizer/schedule=warmup_cosine",
    "optimizer.schedule.warmup_steps=4",
    "model.hidden_sizes=[64]",
)


def train(run_dir: Path, *overrides: str) -> dict:
    """One run in this process, as ``python -m research.train`` would do it; returns summary.json."""
    cfg = compose_train([*COMMON, *overrides])
    run_dir.mkdir(parents=True)
    run(cfg, run_dir)
    return json.loads((run_dir / "summary.json").read_text())


def test_eight_seeds_report_per_seed_lists_mean_and_std(tmp_path: Path) -> None:
    summary = train(tmp_path / "seeds", "trainer.num_seeds=8", "optimizer.learning_rate=1e-2")
    assert summary["num_seeds"] == 8
    for metric in ("test/accuracy", "test/loss", "val/accuracy"):
        per_seed = np.asarray(summary[f"{metric}_per_seed"])
        assert per_seed.shape == (8,)
        assert summary[metric] == pytest.approx(per_seed.mean(), rel=1e-6)
        assert summary[f"{metric}_std"] == pytest.approx(per_seed.std(ddof=1), rel=1e-5)
    accuracy = np.asarray(summary["test/accuracy_per_seed"])
    assert len(set(summary["test/loss_per_seed"])) == 8, "seeds must differ in init and data order"
    assert accuracy.min() > 0.8, "every seed learns"
    records = [json.loads(line) for line in (tmp_path / "seeds" / "metrics.jsonl").read_text().splitlines()]
    assert len(records[-1]["train/loss_per_seed"]) == 8


def test_learning_rate_grid_replicas_equal_single_runs(tmp_path: Path) -> None:
    """With one seed, replica v of the grid is the single run at learning rate values[v]."""
    grid = train(
        tmp_path / "grid",
        "trainer.vmap_over=optimizer.learning_rate",
        "trainer.vmap_values=[1e-3,1e-2]",
        "optimizer.learning_rate=1e-3",
    )
    low = train(tmp_path / "low", "optimizer.learning_rate=1e-3")
    high = train(tmp_path / "high", "optimizer.learning_rate=1e-2")
    assert grid["replicas/optimizer.learning_rate"] == [1e-3, 1e-2]
    assert grid["replicas/seed_index"] == [0, 0]
    # The configured rate: the same program up to vmap, so the same numbers.
    assert grid["test/loss_per_seed"][0] == pytest.approx(low["test/loss"], rel=1e-5)
    # Ten times the rate, applied as a factor on the updates: equal up to float rounding.
    assert grid["test/loss_per_seed"][1] == pytest.approx(high["test/loss"], rel=1e-3)
    assert abs(low["test/loss"] - high["test/loss"]) > 1e-3, "the two learning rates must train differently"


def test_replica_layout_is_value_major() -> None:
    replicas = Replicas(num_seeds=2, key="optimizer.learning_rate", values=(0.1, 0.3), base_value=0.1)
    assert replicas.count == 4
    np.testing.assert_allclose(replicas.scales(), [1.0, 1.0, 3.0, 3.0])
    keys = np.asarray(replicas.rngs(seed=0))
    np.testing.assert_array_equal(keys[0], keys[2])  # same seed index: same init and data order
    assert not np.array_equal(keys[0], keys[1])
    assert replicas.summary()["replicas/seed_index"] == [0, 1, 0, 1]
    single = Replicas()
    assert not single.vmapped
    np.testing.assert_array_equal(single.rngs(seed=3), jax.random.PRNGKey(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "model.dropout", "values": (0.1,)}, "can grid optimizer.learning_rate"),
        ({"key": "optimizer.learning_rate"}, "needs trainer.vmap_values"),
        ({"values": (1e-3,)}, "needs trainer.vmap_over"),
        ({"key": "optimizer.learning_rate", "values": (1e-3, -1.0)}, "positive numbers"),
        ({"key": "optimizer.learning_rate", "values": (1e-3,), "base_value": None}, "to scale from"),
    ],
)
def test_bad_grids_fail_with_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Replicas(**{"base_value": 1e-3, **kwargs})
