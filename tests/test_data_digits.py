"""The bundled digits dataset: built offline as real TFDS data, split reproducibly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

from research.data import digits
from research.data.splits import carve_validation
from research.data.tfds_source import load

ROOT = Path(__file__).resolve().parent.parent
CONFIG = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/digits.yaml"))
DIGITS = 1797


def load_digits(data_dir: Path, **overrides) -> object:
    kwargs = {k: v for k, v in CONFIG.items() if k != "_target_"}
    return load(**{**kwargs, "data_dir": str(data_dir), **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tfds")
    digits.prepare(str(path), **CONFIG["build"])
    return path


def test_builds_a_tfds_array_record_dataset_with_a_stratified_test_split(data_dir: Path) -> None:
    builder = digits.prepare(str(data_dir), **CONFIG["build"])
    assert builder.is_prepared()
    assert builder.info.file_format.value == "array_record"
    assert sorted(p.name.split(".")[0] for p in builder.data_path.glob("*.array_record*")) == [
        "digits-test",
        "digits-train",
    ]
    sources = builder.as_data_source()
    assert len(sources["train"]) + len(sources["test"]) == DIGITS
    test_labels = np.array([sources["test"][i]["label"] for i in range(len(sources["test"]))])
    train_labels = np.array([sources["train"][i]["label"] for i in range(len(sources["train"]))])
    all_labels = np.concatenate([train_labels, test_labels])
    for label in range(10):  # every class held out in the configured proportion, to the example
        n_all = (all_labels == label).sum()
        assert (test_labels == label).sum() == round(CONFIG["build"]["test_fraction"] * n_all)


def test_load_gives_raw_splits_with_the_right_counts_shapes_and_classes(data_dir: Path) -> None:
    ds = load_digits(data_dir)
    assert (ds.name, ds.input_shape, ds.num_classes) == ("digits", (8, 8, 1), 10)
    assert ds.class_names == [str(i) for i in range(10)]
    sizes = {name: split.num_examples for name, split in ds.splits.items()}
    assert sizes["train"] + sizes["val"] + sizes["test"] == DIGITS
    assert sizes["val"] == round(CONFIG["val_fraction"] * (sizes["train"] + sizes["val"]))
    for name, split in ds.splits.items():
        arrays = split.arrays()
        assert arrays["image"].shape == (sizes[name], 8, 8, 1) and arrays["image"].dtype == np.uint8
        assert arrays["label"].dtype == np.int32 and set(arrays["label"]) == set(range(10))
        assert 0 <= arrays["image"].min() and arrays["image"].max() == 16  # raw pixels, not normalised


def test_prepare_is_idempotent_and_a_new_split_is_a_new_directory(data_dir: Path) -> None:
    first = digits.prepare(str(data_dir), **CONFIG["build"])
    stamps = {p: os.stat(p).st_mtime_ns for p in first.data_path.iterdir()}
    again = digits.prepare(str(data_dir), **CONFIG["build"])
    assert again.data_path == first.data_path
    assert {p: os.stat(p).st_mtime_ns for p in again.data_path.iterdir()} == stamps
    other = digits.prepare(str(data_dir), test_fraction=0.5, seed=CONFIG["build"]["seed"])
    assert other.data_path != first.data_path
    assert len(other.as_data_source()["test"]) == pytest.approx(DIGITS / 2, abs=10)


def test_two_processes_building_at_once_both_get_the_whole_dataset(tmp_path: Path) -> None:
    script = (
        "import sys; from research.data import digits; "
        "b = digits.prepare(sys.argv[1], 0.2, 0); s = b.as_data_source(); "
        "print(len(s['train']), len(s['test']))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0].splitlines()[-1].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] and sum(map(int, outputs[0])) == DIGITS
    assert not list((tmp_path / "digits").glob("*/*incomplete*"))


def test_validation_is_carved_from_train_deterministically_and_disjointly(data_dir: Path) -> None:
    train, val = carve_validation(1000, 0.1, seed=3)
    assert len(val) == 100 and not set(train) & set(val) and set(train) | set(val) == set(range(1000))
    again_train, again_val = carve_validation(1000, 0.1, seed=3)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(val, carve_validation(1000, 0.1, seed=4)[1])

    one, two = load_digits(data_dir), load_digits(data_dir)
    assert np.array_equal(one.splits["val"].indices, two.splits["val"].indices)
    assert not set(one.splits["train"].indices) & set(one.splits["val"].indices)
    moved = load_digits(data_dir, split_seed=CONFIG["split_seed"] + 1)
    assert not np.array_equal(moved.splits["val"].indices, one.splits["val"].indices)


def test_normalisation_measured_on_train_gives_zero_mean_unit_std(data_dir: Path) -> None:
    ds = load_digits(data_dir)
    batch = ds.splits["train"].arrays()
    out = jax.jit(ds.transform, static_argnums=2)(jax.random.key(0), batch, False)
    assert out["image"].dtype == np.float32
    assert abs(float(out["image"].mean())) < 1e-5
    assert float(out["image"].std()) == pytest.approx(1.0, abs=1e-4)
    assert np.array_equal(out["label"], batch["label"])
