"""scikit-learn's 8x8 digits as a real TFDS dataset, built offline on first use.

The 1797 images ship inside scikit-learn, so this is the one dataset that needs no
download: ``prepare`` writes it once into the TFDS data dir as array_record files,
readable through ``tfds.data_source`` like any other TFDS dataset. The test split is
stratified by class and fixed by ``(test_fraction, seed)``; both are part of the
builder config's name, so a different split is a different directory, never a
silent overwrite. Pixels are stored raw (0..16, uint8); the transform normalises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from research.absl_logging import absl_errors_only
from research.data.data_dir import check_writable
from research.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SHAPE = (8, 8, 1)  # load_digits images, with a channel axis added
NUM_CLASSES = 10


@dataclasses.dataclass(eq=False, kw_only=True)
class DigitsConfig(tfds.core.BuilderConfig):
    """Which stratified train/test split of the 1797 images is stored."""

    test_fraction: float
    seed: int


class Digits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """scikit-learn's ``load_digits``, stored as TFDS "train" and "test" splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified train/test split of sklearn's load_digits."}
    # The builder lives outside a TFDS dataset package: say where its code is, instead
    # of letting TFDS guess (its guess needs the `importlib_resources` backport).
    code_path = epath.Path(__file__)
    pkg_dir_path = code_path.parent

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Optical recognition of handwritten digits (UCI), as bundled by scikit-learn.",
            features=tfds.features.FeaturesDict(
                {
                    # Tensor, not Image: Image() needs TensorFlow to encode PNGs.
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            # Keep records in the order written, so the stored splits are reproducible.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        from sklearn.datasets import load_digits  # ~1 s import, paid only when building

        digits = load_digits()
        images = digits.images.astype(np.uint8)[..., None]
        labels = digits.target.astype(np.int64)
        config = self.builder_config
        train, test = stratified_split(labels, config.test_fraction, config.seed)
        return {
            "train": self._generate_examples(images, labels, train),
            "test": self._generate_examples(images, labels, test),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for i in indices:
            yield int(i), {"image": images[i], "label": int(labels[i])}


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices holding ``test_fraction`` of every class out.

    Written here rather than taken from scikit-learn so that the stored split cannot
    change with a scikit-learn release.
    """
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test.append(members[: round(test_fraction * len(members))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def prepare(data_dir: str, test_fraction: float, seed: int) -> Digits:
    """A prepared digits builder in ``data_dir``, building it if needed (idempotent).

    TFDS writes into a temporary directory and renames it into place, so two
    processes racing here both end with the same complete dataset: the loser's
    rename fails and it reads the winner's copy.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"data.build.test_fraction must be in (0, 1), got {test_fraction}")
    config = DigitsConfig(
        name=f"test{test_fraction * 100:g}pct_seed{seed}",
        description=f"{test_fraction * 100:g}% of each class held out as test, chosen by seed {seed}.",
        test_fraction=test_fraction,
        seed=seed,
    )
    # TFDS narrates a build (banner, progress bars, warnings that the folder and the
    # config do not exist yet); for a build of a second, one log line says enough.
    muted = io.StringIO()
    with absl_errors_only(), contextlib.redirect_stdout(muted), contextlib.redirect_stderr(muted):
        builder = Digits(data_dir=data_dir, config=config)
        if builder.is_prepared():
            return builder
        check_writable(data_dir, "the digits dataset")
        try:
            builder.download_and_prepare(file_format="array_record")
        except OSError:
            if not builder.is_prepared():
                raise
        # A fresh builder reads the split sizes from the files just written.
        builder = Digits(data_dir=data_dir, config=config)
    log.info("Built the bundled digits dataset into %s", builder.data_path)
    return builder
