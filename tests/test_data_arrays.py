"""A user's own numpy arrays as data=arrays: .npz/.npy files of named fields, own or carved splits,
images through the transforms every image source uses; bad arrays are one line before anything
is written."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

from research.data import digits
from research.data.array_files import load
from research.data.tfds_source import load as load_tfds
from research.errors import ConfigError
from tests.conftest import ROOT, TINY, run_train
from tests.test_field_contract import assert_one_line

ARRAYS = {  # everything data=arrays takes but the path
    "fields": None, "class_names": None, "test_fraction": 0.2, "val_fraction": 0.1, "split_seed": 0,
    "pixel_max": None, "normalize": {"mean": None, "std": None},
    "augment": {"crop_padding": 0, "flip": False, "max_rotation_deg": 0.0, "max_shift": 0.0},
    "batch_size": 8, "eval_batch_size": 64,
}  # fmt: skip
SPLITS = ("train", "val", "test")


def images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) uint8 images whose mean brightness gives one of three labels."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, count).astype(np.int64)
    return (rng.integers(0, 60, (count, 8, 8)) + 80 * label[:, None, None]).astype(np.uint8), label


def test_the_digits_default_splits_as_an_npz_are_the_built_in_digits(tmp_path: Path) -> None:
    """Keras' mnist.npz layout (image_train, label_test, ...): the user's own splits, read as they are."""
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/digits.yaml"))
    digits.prepare(str(tmp_path), **config["build"])
    config = {**{k: v for k, v in config.items() if k != "_target_"}, "data_dir": str(tmp_path)}
    built_in = load_tfds(**config)
    arrays = {s: built_in.splits[s].arrays() for s in SPLITS}
    np.savez(tmp_path / "digits.npz", **{f"{k}_{s}": v for s in SPLITS for k, v in arrays[s].items()})
    ours = load(str(tmp_path / "digits.npz"), **{**ARRAYS, "batch_size": 32, "eval_batch_size": 512})
    assert (ours.name, ours.input_shape, ours.num_classes) == ("arrays:digits", (8, 8, 1), 10)
    for split in SPLITS:
        assert all(
            np.array_equal(ours.splits[split].arrays()[k], arrays[split][k]) for k in ("image", "label")
        )
    batch = {"image": arrays["test"]["image"][:16]}
    key = jax.random.key(0)
    assert np.allclose(
        ours.transform(key, batch, False)["image"], built_in.transform(key, batch, False)["image"]
    )


def test_one_npz_is_carved_stratified_and_images_get_a_channel(tmp_path: Path) -> None:
    image, label = images(100)
    np.savez(tmp_path / "own.npz", x=image, y=label)
    dataset = load(str(tmp_path / "own.npz"), **{**ARRAYS, "fields": {"image": "x", "label": "y"}})
    assert dataset.input_shape == (8, 8, 1) and dataset.class_names == ["0", "1", "2"]
    assert [dataset.splits[s].num_examples for s in SPLITS] == [72, 8, 20]
    test = dataset.splits["test"].arrays()
    assert sorted(test) == ["image", "label"]
    assert np.abs(np.bincount(test["label"], minlength=3) - np.bincount(label, minlength=3) * 0.2).max() < 1
    assert dataset.info["splits"]["test"] == "carved from own.npz (split_seed=0)"
    normalised = dataset.transform(jax.random.key(0), dataset.splits["train"].arrays(), False)["image"]
    assert abs(float(normalised.mean())) < 1e-4 and abs(float(normalised.std()) - 1) < 1e-4


def test_a_folder_of_npy_fields_and_a_folder_of_split_files(tmp_path: Path) -> None:
    (tmp_path / "fields").mkdir()
    x, y = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32), np.arange(50.0)[:, None]
    np.save(tmp_path / "fields" / "x.npy", x)
    np.save(tmp_path / "fields" / "y.npy", y)
    table = load(str(tmp_path / "fields"), **ARRAYS)
    assert (table.name, table.num_classes, table.input_shape) == ("arrays:fields", None, (3,))
    rows = np.concatenate([table.splits[s].arrays()["x"] for s in SPLITS])
    assert sorted(map(tuple, rows)) == sorted(map(tuple, x))  # regression: carved, untouched
    (tmp_path / "split").mkdir()
    for split, count in (("train", 40), ("test", 10)):
        image, label = images(count, seed=count)
        np.savez(tmp_path / "split" / f"{split}.npz", image=image, label=label)
    dataset = load(str(tmp_path / "split"), **ARRAYS)
    assert [dataset.splits[s].num_examples for s in SPLITS] == [36, 4, 10]
    assert dataset.info["splits"]["test"] == "test.npz"


@pytest.mark.slow  # a CNN compiled through the CLI: ~20 s alone
def test_an_image_recipes_augmentation_works_on_arrays_through_the_cli(tmp_path: Path, run_dir: Path) -> None:
    """digits_cnn sets data.augment.max_shift: data=arrays takes it like any image source."""
    image, label = images(120)
    np.savez(tmp_path / "own.npz", image=image, label=label)
    run_train(
        "+experiment=digits_cnn", "data=arrays", f"data.path={tmp_path / 'own.npz'}", "data.batch_size=16",
        "+debug=fast", *TINY, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert config.data.augment.max_shift == 1.0 and summary["steps"] == 8 and "test/accuracy" in summary


def test_augmenting_arrays_without_an_image_field_is_one_line(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.zeros((20, 3)), y=np.zeros((20, 1)))
    with pytest.raises(ConfigError, match=r"data.augment works on an image field; .* gives \['x', 'y'\]"):
        load(str(tmp_path / "t.npz"), **{**ARRAYS, "augment": {**ARRAYS["augment"], "flip": True}})


def bad_arrays(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    """{case: (overrides, what the one line must hold)}, with the files each case reads written."""
    image, label = images(40)
    np.savez(root / "short.npz", image=image, label=label[:39])
    np.savez(root / "own.npz", x=image, y=label)
    (root / "split").mkdir()
    np.savez(root / "split" / "train.npz", image=image, label=label)
    np.savez(root / "split" / "test.npz", image=image[:0], label=label[:0])
    (root / "broken.npz").write_bytes(b"not a zip")

    def at(name: str) -> str:
        return f"data.path={root / name}"

    return {
        "unequal lengths": (
            [at("short.npz")],
            ["short.npz", "different numbers of examples", "image: 40", "label: 39"],
        ),
        "misnamed field": (
            [at("own.npz"), "data.fields={image:x,label:label}"],
            ["data.fields.label='label'", "own.npz", "its arrays are x, y"],
        ),
        "empty split": ([at("split")], ["test.npz holds no examples"]),
        "no such path": ([at("nowhere.npz")], ["data.path=", "nowhere.npz", "does not exist"]),
        "unreadable file": ([at("broken.npz")], ["broken.npz", "cannot be read as numpy arrays"]),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case", ["unequal lengths", "misnamed field", "empty split", "no such path", "unreadable file"]
)
def test_bad_arrays_are_one_line_naming_the_file_and_key_before_anything_is_written(
    case: str, tmp_path: Path, run_dir: Path
) -> None:
    overrides, expected = bad_arrays(tmp_path)[case]
    proc = run_train("data=arrays", *overrides, *TINY, f"hydra.run.dir={run_dir}", check=False)
    assert_one_line(proc, run_dir, *expected)
