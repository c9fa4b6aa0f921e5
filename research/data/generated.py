"""Samples of a class-conditional generator as a TFDS dataset, and the loader that trains on them.

``research.generate`` writes the samples with ``write`` into ``<run>/generated/`` (a TFDS
data dir holding ``generated/1.0.0``, array_record files, one "train" split) with the
source data's image shape, dtype and pixel scale, so any classifier recipe reads them as
it reads the real data. ``load`` (``data=generated data.run=<run>``) carves validation out
of the samples and takes the test split from the real dataset the generator was trained
on (read from the run's saved config): the test metric is train-on-synthetic, test-on-real.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from research.absl_logging import absl_errors_only
from research.data.base import Dataset
from research.data.splits import TFDSSplit, carve_validation
from research.data.tfds_source import _normalization
from research.data.transforms import Augment, make_transform
from research.errors import ConfigError, DataError

NAME = "generated"
VERSION = "1.0.0"
META = "generated.json"  # beside the TFDS folder: which run, checkpoint and seed made the samples


class Generated(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """In-memory samples (images, labels) stored as one TFDS "train" split."""

    name = NAME
    RELEASE_NOTES = {VERSION: "Samples of a class-conditional generator."}
    VERSION = tfds.core.Version(VERSION)
    code_path = epath.Path(__file__)  # outside a TFDS package: say where the code is (see digits.py)
    pkg_dir_path = code_path.parent

    def __init__(
        self, *, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], about: str, **kw
    ):
        self.images, self.labels, self.class_names, self.about = images, labels, list(class_names), about
        super().__init__(**kw)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.about,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=self.images.shape[1:], dtype=self.images.dtype),
                    "label": tfds.features.ClassLabel(names=self.class_names),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # records in the order written: the stored dataset is reproducible
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict]]:
        for i, (image, label) in enumerate(zip(self.images, self.labels, strict=True)):
            yield i, {"image": image, "label": int(label)}


def write(out: Path, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], meta: dict) -> Path:
    """Store the samples as a TFDS dataset in the data dir ``out``; returns the dataset's folder."""
    about = (
        f"Samples of the generator in {meta['run']} "
        f"(checkpoint {meta['checkpoint_step']}, seed {meta['seed']})."
    )
    muted = io.StringIO()  # TFDS narrates a build (banner, progress bars): the caller's one line says enough
    with absl_errors_only(), contextlib.redirect_stdout(muted), contextlib.redirect_stderr(muted):
        builder = Generated(images=images, labels=labels, class_names=class_names, about=about, data_dir=out)
        builder.download_and_prepare(file_format="array_record")
    downloads = out / "downloads"  # TFDS makes it (empty) even when nothing is downloaded
    if downloads.is_dir() and not any(p.is_file() for p in downloads.rglob("*")):
        shutil.rmtree(downloads)
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return out / NAME / VERSION


def open_samples(out: Path, run_dir: Path) -> tfds.core.DatasetBuilder:
    """The builder of the samples in ``out``, or one line saying how to write them."""
    folder = out / NAME / VERSION
    if not (folder / "dataset_info.json").is_file():
        raise DataError(
            f"no generated dataset in {out}: write it with "
            f"`python -m research.generate run={run_dir} num_examples=<N>` (or set data.out)"
        )
    with absl_errors_only():
        return tfds.builder_from_directory(folder)


def source_config(run_dir: Path) -> dict[str, Any]:
    """The data config the generator in ``run_dir`` was trained on, resolved."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"data.run={run_dir}: no run there (looked for {path})")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True).get("data") or {}
    if "_target_" not in data:
        raise ConfigError(f"data.run={run_dir}: the run was trained without data: no real test split")
    if data.get("classes") is not None:
        raise ConfigError(
            f"data.run={run_dir}: the generator was trained on data.classes={data['classes']}; "
            "train-on-synthetic, test-on-real needs a generator of all the classes"
        )
    return data


def real_dataset(source: dict[str, Any]) -> Dataset:
    """The dataset the generator was trained on, opened as its run opened it."""
    from hydra.utils import instantiate

    return instantiate(source, _convert_="all")


def load(
    run: str | None,
    out: str | None,
    batch_size: int,
    eval_batch_size: int,
    val_fraction: float,
    split_seed: int,
    in_memory: bool,
    pixel_max: float | None,
    normalize: Mapping[str, Sequence[float] | None],
    augment: Mapping[str, Any],
) -> Dataset:
    """Train and val from the samples in ``out`` (default ``<run>/generated``), test from the real data.

    ``pixel_max`` null takes the source data's (the samples are stored on its scale);
    ``normalize`` null measures the statistics on the samples' train split.
    """
    if not run:
        raise ConfigError("data.run=<run dir> is required: the run of the class-conditional generator")
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"data.run={run_dir}: no such run directory")
    source = source_config(run_dir)
    folder = Path(out).expanduser() if out else run_dir / NAME
    builder = open_samples(folder, run_dir)
    real = real_dataset(source)
    shape, classes = tuple(builder.info.features["image"].shape), builder.info.features["label"].num_classes
    if shape != tuple(real.input_shape) or classes != real.num_classes:
        raise DataError(
            f"the samples in {folder} ({shape}, {classes} classes) do not match {real.name} "
            f"({real.input_shape}, {real.num_classes} classes), the data of data.run={run_dir}"
        )
    samples = builder.as_data_source(split="train")
    train, val = carve_validation(len(samples), val_fraction, split_seed)
    if batch_size > len(train):
        raise ConfigError(f"data.batch_size={batch_size} exceeds the {len(train)} generated train examples")
    splits = {
        "train": TFDSSplit(samples, train, "image", "label", in_memory=in_memory),
        "val": TFDSSplit(samples, val, "image", "label", in_memory=True),
        "test": real.splits["test"],  # the real test split: train on synthetic, test on real
    }
    scale = source.get("pixel_max") if pixel_max is None else pixel_max
    if scale is None:
        raise ConfigError(f"data.pixel_max is required: the data of data.run={run_dir} names none")
    mean, std = _normalization(normalize, splits["train"], scale, channels=real.input_shape[-1])
    return Dataset(
        name=f"{NAME}_{real.name}",
        input_shape=tuple(real.input_shape),
        num_classes=real.num_classes,
        splits=splits,
        transform=make_transform(mean, std, scale, Augment(**augment)),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        class_names=list(real.class_names),
        info={"run": str(run_dir), "samples": str(folder)},
    )
