"""Fashion-MNIST built offline from IDX files: the real Debian files where installed, fakes anywhere."""

from __future__ import annotations

import gzip
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from research.data import fashion_mnist, prepare
from research.data.tfds_source import load
from research.errors import DataError
from tests import needs

ROOT = Path(__file__).resolve().parent.parent
REAL = fashion_mnist.DEBIAN_IDX_DIR


def config(data_dir: Path, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/fashion_mnist.yaml"))
    del cfg["_target_"]
    return {**cfg, "data_dir": str(data_dir), **overrides}


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = np.array([magic, *array.shape], ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_idx(tmp_path: Path) -> tuple[Path, dict]:
    """Four IDX files of 30 train and 10 test random images, in the original names."""
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("test", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        images_file, labels_file = fashion_mnist.IDX_FILES[split]
        write_idx(folder / images_file, images, fashion_mnist.IMAGES_MAGIC)
        write_idx(folder / labels_file, labels, fashion_mnist.LABELS_MAGIC)
        arrays[split] = (images, labels)
    return folder, arrays


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_idx_files_become_a_tfds_dataset_the_image_loader_reads(fake_idx, tmp_path: Path, offline) -> None:
    idx_dir, arrays = fake_idx
    ds = load(**config(tmp_path / "tfds", build={"idx_dir": str(idx_dir)}, batch_size=4, eval_batch_size=8))
    assert (ds.name, ds.input_shape, ds.num_classes) == ("fashion_mnist", (28, 28, 1), 10)
    assert ds.class_names == fashion_mnist.CLASS_NAMES
    assert ds.splits["train"].num_examples + ds.splits["val"].num_examples == 30
    test = ds.splits["test"].arrays()
    assert np.array_equal(test["image"][..., 0], arrays["test"][0])  # file order, pixels untouched
    assert np.array_equal(test["label"], arrays["test"][1]) and test["label"].dtype == np.int32
    stored = list((tmp_path / "tfds" / "fashion_mnist" / "from_idx").glob("*/*.array_record*"))
    assert sorted(p.name.split(".")[0] for p in stored) == ["fashion_mnist-test", "fashion_mnist-train"]
    assert not (tmp_path / "tfds" / "fashion_mnist" / "3.0.1").exists()  # TFDS's own folder is untouched


def test_a_second_load_reads_the_build_and_prepare_reports_it(fake_idx, tmp_path: Path, capsys) -> None:
    idx_dir, _ = fake_idx
    data_dir = tmp_path / "tfds"
    first = fashion_mnist.prepare(str(data_dir), str(idx_dir))
    stamps = {p: os.stat(p).st_mtime_ns for p in first.data_path.iterdir()}
    assert prepare.main(["fashion_mnist", "--data_dir", str(data_dir), "--source", str(idx_dir)]) == 0
    assert str(first.data_path) in capsys.readouterr().out
    assert {p: os.stat(p).st_mtime_ns for p in first.data_path.iterdir()} == stamps  # nothing rebuilt


def test_without_idx_files_or_a_tfds_copy_the_error_names_both_ways(tmp_path: Path, offline) -> None:
    with pytest.raises(DataError) as err:
        load(**config(tmp_path, build={"idx_dir": str(tmp_path / "absent")}))
    message = str(err.value)
    assert "\n" not in message and "fashion_mnist is not prepared" in message
    assert "python -m research.data.prepare fashion_mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.build.idx_dir" in message


def test_a_corrupt_idx_file_is_a_data_error(fake_idx, tmp_path: Path) -> None:
    idx_dir, _ = fake_idx
    write_idx(
        idx_dir / fashion_mnist.IDX_FILES["train"][0], np.zeros((3, 28, 28)), fashion_mnist.LABELS_MAGIC
    )
    with pytest.raises(DataError, match="not an IDX file of the expected kind"):
        fashion_mnist.prepare(str(tmp_path / "tfds"), str(idx_dir))


@needs.fashion_mnist_files
def test_the_real_files_give_60000_and_10000_balanced_examples(offline) -> None:
    # The test session's TFDS data dir (conftest): built once (~7 s), then reused by later sessions.
    data_dir = Path(os.environ["TFDS_DATA_DIR"])
    ds = load(**config(data_dir))
    sizes = {name: split.num_examples for name, split in ds.splits.items()}
    assert sizes["train"] + sizes["val"] == 60000 and sizes["test"] == 10000 and sizes["val"] == 6000
    test = ds.splits["test"].arrays()  # 10000 records: ~1 s; train would take ~6 s more
    assert np.bincount(test["label"], minlength=10).tolist() == [1000] * 10
    assert test["image"].shape == (10000, 28, 28, 1) and test["image"].dtype == np.uint8
    images, labels = fashion_mnist.read_split(REAL, "test")
    assert np.array_equal(test["image"], images) and np.array_equal(test["label"], labels)
    assert abs(test["image"].mean() / 255 - 0.2860) < 0.01  # the config's normalisation mean

    images, labels = fashion_mnist.read_split(REAL, "train")
    assert np.bincount(labels, minlength=10).tolist() == [6000] * 10
    source = fashion_mnist.prepare(str(data_dir), REAL).as_data_source()["train"]
    for i in np.random.default_rng(0).choice(60000, 200, replace=False):  # stored as in the files
        record = source[int(i)]
        assert record["label"] == labels[i] and np.array_equal(record["image"], images[i])
