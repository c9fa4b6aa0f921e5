"""Synthetic sequence benchmarks (adding, copy) and the in-memory split every array source returns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from research.data import synthetic
from research.data.arrays import ArraySplit
from research.engine.feed import eval_indices
from research.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"num_train": 500, "num_val": 50, "num_test": 400}


def config(dataset: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / f"conf/data/{dataset}.yaml"))
    del cfg["_target_"]
    return {**cfg, **overrides}


def test_adding_problem_has_two_markers_one_per_half_and_the_sum_as_target() -> None:
    ds = synthetic.load_adding(**config("adding", **SMALL))
    assert ds.input_shape == (100, 2) and config("adding")["length"] >= 100
    for split, n in (("train", 500), ("val", 50), ("test", 400)):
        a = ds.splits[split].arrays()
        assert a["x"].shape == (n, 100, 2) and a["y"].shape == (n, 1) and a["x"].dtype == np.float32
        values, markers = a["x"][..., 0], a["x"][..., 1]
        assert ((values >= 0) & (values <= 1)).all()
        assert (markers[:, :50].sum(1) == 1).all() and (markers[:, 50:].sum(1) == 1).all()
        assert np.allclose(a["y"][:, 0], (values * markers).sum(1), atol=1e-6)
    assert ds.info["baseline_test_mse"]["train_mean"] == pytest.approx(1 / 6, abs=0.03)


def test_generation_is_fixed_by_the_seed_and_each_split_has_its_own_stream() -> None:
    one = synthetic.load_adding(**config("adding", **SMALL)).splits
    two = synthetic.load_adding(**config("adding", **{**SMALL, "num_train": 100})).splits
    assert np.array_equal(
        one["test"].arrays()["x"], two["test"].arrays()["x"]
    )  # train size leaves test alone
    other = synthetic.load_adding(**config("adding", **SMALL, seed=1)).splits
    assert not np.array_equal(one["test"].arrays()["x"], other["test"].arrays()["x"])
    train = {row.tobytes() for row in one["train"].arrays()["x"]}
    assert not train & {row.tobytes() for row in one["test"].arrays()["x"]}


def test_copy_task_layout() -> None:
    ds = synthetic.load_copy(**config("copy_memory", **SMALL))
    delay, k, symbols = 100, 10, 8
    a = ds.splits["train"].arrays()
    assert a["tokens"].shape == a["target"].shape == a["target_mask"].shape == (500, delay + 2 * k)
    assert a["tokens"].dtype == a["target"].dtype == np.int32 and a["target_mask"].dtype == np.float32
    assert ((a["tokens"][:, :k] >= 1) & (a["tokens"][:, :k] <= symbols)).all()
    assert (a["tokens"][:, k + delay - 1] == symbols + 1).all()  # the delimiter
    assert (np.delete(a["tokens"][:, k:], delay - 1, axis=1) == 0).all()  # blanks elsewhere
    assert np.array_equal(a["target"][:, -k:], a["tokens"][:, :k]) and (a["target"][:, :-k] == 0).all()
    assert (a["target_mask"].sum(1) == k).all() and (a["target_mask"][:, -k:] == 1).all()
    assert ds.info["vocab_size"] == symbols + 2
    assert ds.info["baseline_loss"] == pytest.approx(k * math.log(symbols) / (delay + 2 * k))


@pytest.mark.parametrize(
    ("loader", "overrides", "match"),
    [
        ("adding", {"length": 1}, "data.length"),
        ("adding", {"num_val": 0}, "data.num_val"),
        ("copy_memory", {"delay": 0}, "data.delay"),
        ("copy_memory", {"batch_size": 10_000}, "data.batch_size=10000 exceeds"),
    ],
)
def test_bad_sizes_are_config_errors(loader: str, overrides: dict, match: str) -> None:
    load = synthetic.load_adding if loader == "adding" else synthetic.load_copy
    with pytest.raises(ConfigError, match=match):
        load(**config(loader, **{**SMALL, **overrides}))


def test_configs_instantiate_into_datasets_the_engine_can_batch() -> None:
    for name, overrides in (("adding", SMALL), ("copy_memory", SMALL), ("diabetes", {}), ("sunspots", {})):
        cfg = OmegaConf.load(ROOT / f"conf/data/{name}.yaml")
        ds = instantiate(OmegaConf.merge(cfg, overrides), _convert_="all")
        for split in ds.splits.values():
            arrays = split.arrays()
            assert split.in_memory and all(len(v) == split.num_examples for v in arrays.values())
            idx, mask = eval_indices(split.num_examples, ds.eval_batch_size)  # what the engine gathers
            batch = {k: v[idx] for k, v in arrays.items()}
            assert mask.sum() == split.num_examples and all(v.shape[:2] == idx.shape for v in batch.values())
        out = ds.transform(None, ds.splits["train"].arrays(), True)
        assert out.keys() == ds.splits["train"].arrays().keys()


def test_a_streamed_array_split_resumes_exactly_and_shards_disjointly() -> None:
    split = ArraySplit({"x": np.arange(40, dtype=np.float32)[:, None], "y": np.arange(40)})
    iterator = split.iterator(4, 0, 0, 1)
    [next(iterator) for _ in range(3)]
    state = iterator.get_state()
    expected = [next(iterator)["y"] for _ in range(4)]
    resumed = split.iterator(4, 0, 0, 1)
    resumed.set_state(state)
    assert all(np.array_equal(e, next(resumed)["y"]) for e in expected)
    shards = [next(split.iterator(20, 0, shard, 2))["y"] for shard in range(2)]  # one epoch of each shard
    assert sorted(shards[0]) == list(range(0, 40, 2)) and sorted(shards[1]) == list(range(1, 40, 2))
