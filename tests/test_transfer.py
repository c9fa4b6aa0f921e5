"""Few-label fine-tuning: data.labels_per_class, and the transfer-learning recipes' settings."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from research.config import compose_train
from research.errors import ConfigError


def digits(*overrides: str):
    """The digits dataset of classes 5-9 with ``overrides``; a ConfigError as the CLI reports it."""
    cfg = compose_train(["data=digits", "data.classes=[5,6,7,8,9]", "data.batch_size=8", *overrides])
    try:
        return instantiate(cfg.data, _convert_="all")
    except InstantiationException as e:
        raise e.__cause__ from None


def test_labels_per_class_keeps_that_many_training_examples_of_each_class_and_whole_eval_splits() -> None:
    full, few, again = digits(), digits("data.labels_per_class=4"), digits("data.labels_per_class=4")
    labels = few.splits["train"].arrays()["label"]
    assert sorted(np.unique(labels, return_counts=True)[1]) == [4] * 5 and set(labels) == {5, 6, 7, 8, 9}
    assert set(few.splits["train"].indices) < set(full.splits["train"].indices)
    np.testing.assert_array_equal(few.splits["train"].indices, again.splits["train"].indices)  # seeded
    for split in ("val", "test"):
        np.testing.assert_array_equal(few.splits[split].indices, full.splits[split].indices)
    other_seed = digits("data.labels_per_class=4", "data.split_seed=1")
    assert not np.array_equal(other_seed.splits["train"].indices, few.splits["train"].indices)


def test_the_relabelling_transform_takes_images_alone() -> None:
    data = digits()
    batch = data.splits["test"].arrays()
    out = data.transform(None, {"image": batch["image"][:3]}, False)
    assert set(out) == {"image"} and out["image"].shape == (3, 8, 8, 1)
    assert set(np.asarray(data.transform(None, batch, False)["label"])) == {0, 1, 2, 3, 4}


def test_too_many_labels_per_class_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"data.labels_per_class=500 exceeds the \d+ training examples"):
        digits("data.labels_per_class=500")
    with pytest.raises(ConfigError, match="data.batch_size=8 exceeds the 5 training examples"):
        digits("data.labels_per_class=1")


@pytest.mark.parametrize(
    ("recipe", "classes", "freeze"),
    [
        ("fashion_mnist_cnn_pretrain", [0, 1, 2, 3, 4], []),
        ("fashion_mnist_cnn_finetune", [5, 6, 7, 8, 9], []),
        ("fashion_mnist_cnn_linear_probe", [5, 6, 7, 8, 9], ["blocks", "dense"]),
    ],
)
def test_transfer_recipes(recipe: str, classes: list, freeze: list) -> None:
    cfg = compose_train([f"+experiment={recipe}", "trainer.init_from.path=/some/run"])
    assert cfg.name == recipe and cfg.data.name == "fashion_mnist" and list(cfg.data.classes) == classes
    assert list(cfg.optimizer.freeze) == freeze
    if recipe != "fashion_mnist_cnn_pretrain":
        assert cfg.data.labels_per_class == 20 and list(cfg.trainer.init_from.exclude) == ["head"]
        assert cfg.data.batch_size <= 5 * cfg.data.labels_per_class
