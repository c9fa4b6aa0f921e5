"""Few-label fine-tuning: data.labels_per_class, and the transfer-learning recipes' settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from research.config import compose_train
from research.engine.init_from import checkpoint_state_dir, read_arrays
from research.errors import ConfigError
from tests import needs
from tests.conftest import TINY, run_train


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
    ("recipe", "classes", "freeze", "exclude"),
    [
        ("fashion_mnist_cnn_pretrain", [0, 1, 2, 3, 4], [], []),
        ("fashion_mnist_cnn_finetune", [5, 6, 7, 8, 9], [], ["head", "dense"]),
        ("fashion_mnist_cnn_linear_probe", [5, 6, 7, 8, 9], ["blocks", "dense"], ["head"]),
    ],
)
def test_transfer_recipes(recipe: str, classes: list, freeze: list, exclude: list) -> None:
    cfg = compose_train([f"+experiment={recipe}", "trainer.init_from.path=/some/run"])
    assert cfg.name == recipe and cfg.data.name == "fashion_mnist" and list(cfg.data.classes) == classes
    assert list(cfg.optimizer.freeze) == freeze
    if recipe != "fashion_mnist_cnn_pretrain":
        assert cfg.data.labels_per_class == 50 and list(cfg.trainer.init_from.exclude) == exclude
        assert cfg.data.batch_size <= 5 * cfg.data.labels_per_class


SMALL_CNN = ("model.channels=[4,8]", "model.dense_sizes=[16]", "+debug=fast", *TINY)
FEW = ("data.labels_per_class=5", "data.batch_size=10")


def _report(stdout: str) -> dict[str, str]:
    """init_from's report lines by kind (loaded, frozen, excluded, ...)."""
    return {line.split()[0]: line for line in stdout.splitlines() if line.startswith("  ")}


@needs.fashion_mnist_files
def test_the_transfer_recipes_load_freeze_and_reinitialise_what_they_say(tmp_path: Path) -> None:
    """Pretrain on classes 0-4, then the linear probe and the fine-tune recipes on classes 5-9 (real
    Fashion-MNIST, a small CNN, 8 steps each): which parameters were loaded, frozen and
    re-initialised, and frozen parameters and their batch-norm statistics bit-identical after training.
    """
    pre = tmp_path / "pretrain"
    run_train("+experiment=fashion_mnist_cnn_pretrain", *SMALL_CNN, f"hydra.run.dir={pre}")
    source = read_arrays(checkpoint_state_dir(pre))
    probe, tuned = tmp_path / "probe", tmp_path / "finetune"
    reports = {}
    for recipe, run_dir in (("linear_probe", probe), ("finetune", tuned)):
        proc = run_train(
            f"+experiment=fashion_mnist_cnn_{recipe}", *SMALL_CNN, *FEW,
            f"trainer.init_from.path={pre}", f"hydra.run.dir={run_dir}",
        )  # fmt: skip
        reports[recipe] = _report(proc.stdout)
    body = [  # the learned variables of everything but the head (RNG streams start fresh)
        k
        for k in source
        if k.startswith(("params/", "model_state/")) and "/head/" not in k and "/rngs/" not in k
    ]
    assert "model_state/blocks/0/norm/mean" in body and "params/dense/0/kernel" in body
    convs = [k for k in body if "/blocks/" in k]
    assert all(k in reports["linear_probe"]["loaded"] for k in body), reports["linear_probe"]
    assert all(k in reports["finetune"]["loaded"] for k in convs), reports["finetune"]
    assert "params/dense/0/kernel" not in reports["finetune"]["loaded"]  # fine-tuning: a fresh top
    assert "params/dense/0/kernel" in reports["finetune"]["excluded"]
    for recipe in ("linear_probe", "finetune"):
        assert "params/head/kernel" in reports[recipe]["excluded"]  # a fresh head for the new classes
    assert all(k in reports["linear_probe"]["frozen"] for k in body)
    assert "params/head" not in reports["linear_probe"]["frozen"] and "frozen" not in reports["finetune"]

    after = {
        name: read_arrays(d / "checkpoints" / "8" / "state")
        for name, d in (("probe", probe), ("tuned", tuned))
    }
    for key in body:  # the probe's body and its batch-norm statistics: bit for bit the pretrained ones
        np.testing.assert_array_equal(after["probe"][key], source[key], err_msg=key)
    assert not np.array_equal(after["probe"]["params/head/kernel"], source["params/head/kernel"])
    moved = [k for k in body if not np.array_equal(after["tuned"][k], source[k])]
    assert "params/blocks/0/conv/kernel" in moved and "model_state/blocks/0/norm/mean" in moved
