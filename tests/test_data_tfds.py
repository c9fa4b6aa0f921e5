"""TFDS datasets through the one ``load()``: mocked sources, missing data, bad config, streaming."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from hydra.utils import get_object
from omegaconf import OmegaConf

from research.data import prepare
from research.data.tfds_source import load
from research.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
MOCK_EXAMPLES = 40


def config(dataset: str, data_dir: Path, **overrides) -> dict:
    """The kwargs that conf/data/<dataset>.yaml passes to load(), pointed at ``data_dir``."""
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / f"conf/data/{dataset}.yaml"))
    del cfg["_target_"]
    return {**cfg, "data_dir": str(data_dir), **overrides}


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One TFDS data dir for every digits case here: digits is built into it once."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails at once instead of hanging."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("mnist", (28, 28, 1), 10), ("fashion_mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10)],
)
def test_mocked_tfds_datasets_load_through_the_same_loader(
    name: str, shape: tuple, classes: int, tmp_path: Path, offline: None
) -> None:
    # build=None: TFDS's own fashion_mnist, not the local build from IDX files (test_data_fashion_mnist.py).
    overrides = {"build": None} if name == "fashion_mnist" else {}
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        ds = load(**config(name, tmp_path, batch_size=8, eval_batch_size=8, **overrides))
        arrays = {split: ds.splits[split].arrays() for split in ("train", "val", "test")}
    assert (ds.name, ds.input_shape, ds.num_classes, len(ds.class_names)) == (name, shape, classes, classes)
    assert ds.splits["val"].num_examples == round(0.1 * MOCK_EXAMPLES)
    assert ds.splits["train"].num_examples + ds.splits["val"].num_examples == MOCK_EXAMPLES
    for split, a in arrays.items():
        assert a["image"].shape == (ds.splits[split].num_examples, *shape) and a["image"].dtype == np.uint8
        assert a["label"].dtype == np.int32 and 0 <= a["label"].min() and a["label"].max() < classes
    out = jax.jit(ds.transform, static_argnums=2)(jax.random.key(0), arrays["train"], True)
    assert out["image"].shape == arrays["train"]["image"].shape and out["image"].dtype == np.float32


def binary_images(builder: tfds.core.DatasetBuilder, split: dict) -> dict:
    """``as_data_source`` for mock_data: 0/1 images as binarized_mnist holds (the default mock is 0-255)."""
    rng = np.random.default_rng(0)
    return {
        key: [{"image": rng.integers(0, 2, (28, 28, 1), np.uint8)} for _ in range(MOCK_EXAMPLES)]
        for key in split
    }


def test_unlabelled_binarized_mnist_loads_images_alone(tmp_path: Path, offline: None) -> None:
    """binarized_mnist has no supervised keys: records hold 0/1 images and no label, in every split."""
    with tfds.testing.mock_data(as_data_source_fn=binary_images):
        ds = load(**config("binarized_mnist", tmp_path, batch_size=8, eval_batch_size=8))
        arrays = {split: ds.splits[split].arrays() for split in ("train", "val", "test")}
        streamed = next(ds.splits["train"].iterator(batch_size=4, seed=0, shard_index=0, shard_count=1))
    assert (ds.input_shape, ds.num_classes, ds.class_names) == ((28, 28, 1), None, [])
    assert ds.splits["train"].num_examples + ds.splits["val"].num_examples == MOCK_EXAMPLES
    for split, a in arrays.items():
        assert set(a) == {"image"} and a["image"].shape == (ds.splits[split].num_examples, 28, 28, 1)
    assert set(streamed) == {"image"}
    out = ds.transform(jax.random.key(0), arrays["train"], False)["image"]
    assert set(np.unique(np.asarray(out))) <= {0.0, 1.0}  # pixel_max 1, no normalisation: Bernoulli targets


@pytest.mark.parametrize("overrides", [{"classes": [0, 1]}, {"labels_per_class": 3}])
def test_class_options_on_unlabelled_data_are_config_errors(
    overrides: dict, tmp_path: Path, offline: None
) -> None:
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES), pytest.raises(ConfigError, match="need labels"):
        load(**config("binarized_mnist", tmp_path, batch_size=8, **overrides))


def test_every_data_config_matches_its_loader_signature() -> None:
    for path in sorted((ROOT / "conf/data").glob("*.yaml")):
        cfg = OmegaConf.to_container(OmegaConf.load(path))
        if path.stem == "none":
            assert cfg == {}  # no _target_: the build step passes dataset=None
            continue
        target = cfg.pop("_target_")
        assert target.startswith("research.data."), path.name
        parameters = inspect.signature(get_object(target)).parameters
        required = {name for name, p in parameters.items() if p.default is inspect.Parameter.empty}
        assert required <= set(cfg) <= set(parameters), path.name
        assert {"batch_size", "eval_batch_size"} <= set(cfg), path.name


def test_a_dataset_that_is_not_prepared_says_how_to_prepare_it(tmp_path: Path, offline: None) -> None:
    with pytest.raises(DataError) as err:
        load(**config("mnist", tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert f"mnist is not prepared in {tmp_path}" in message
    assert "python -m research.data.prepare mnist" in message
    assert not list(tmp_path.rglob("*.array_record*"))  # nothing was downloaded or built


def test_an_unknown_dataset_name_is_a_data_error(tmp_path: Path, offline: None) -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnistt'"):
        load(**config("mnist", tmp_path, name="mnistt"))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"batch_size": 10_000}, "data.batch_size"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"normalize": {"mean": [0.5], "std": None}}, "data.normalize"),
        ({"normalize": {"mean": [0.5, 0.5], "std": [0.2, 0.2]}}, "one value per channel"),
        ({"augment": {"crop_padding": -2}}, "data.augment.crop_padding"),
        ({"build": None}, "data.build"),
    ],
)
def test_bad_digits_settings_are_config_errors(overrides: dict, match: str, digits_dir: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        load(**config("digits", digits_dir, **overrides))


def test_build_options_are_rejected_for_a_non_bundled_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.build only applies"):
        load(**config("mnist", tmp_path, build={"test_fraction": 0.2, "seed": 0}))


def test_streamed_train_split_resumes_exactly_from_a_saved_state(digits_dir: Path) -> None:
    ds = load(**config("digits", digits_dir, in_memory=False, batch_size=16))
    train = ds.splits["train"]
    assert not train.in_memory and ds.splits["val"].in_memory and ds.splits["test"].in_memory

    iterator = train.iterator(16, 0, 0, 1)
    first = [next(iterator) for _ in range(3)]
    assert first[0]["image"].shape == (16, 8, 8, 1) and first[0]["image"].dtype == np.uint8
    assert first[0]["label"].shape == (16,) and first[0]["label"].dtype == np.int32
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]

    resumed = train.iterator(16, 0, 0, 1)
    resumed.set_state(state)
    for want, got in zip(expected, (next(resumed) for _ in range(4)), strict=True):
        assert np.array_equal(want["image"], got["image"]) and np.array_equal(want["label"], got["label"])

    other_seed = next(train.iterator(16, 1, 0, 1))
    assert not np.array_equal(other_seed["image"], first[0]["image"])


def test_each_shard_streams_its_own_records_once_per_epoch(digits_dir: Path) -> None:
    ds = load(**config("digits", digits_dir, in_memory=False))
    train = ds.splits["train"]
    images = train.arrays()["image"]
    for shard in range(2):
        own = images[shard::2]  # the two shards together are the whole split
        iterator = train.iterator(1, 0, shard, 2)
        epoch = np.concatenate([next(iterator)["image"] for _ in range(len(own))])
        assert sorted(i.tobytes() for i in epoch) == sorted(i.tobytes() for i in own)


def test_prepare_cli_skips_bundled_and_rejects_unknown_names(tmp_path: Path, offline: None, capsys) -> None:
    assert prepare.main(["digits", "--data_dir", str(tmp_path)]) == 0
    assert "built offline" in capsys.readouterr().out
    assert prepare.main(["not_a_dataset", "--data_dir", str(tmp_path)]) == 1
    assert "unknown TFDS dataset 'not_a_dataset'" in capsys.readouterr().err
