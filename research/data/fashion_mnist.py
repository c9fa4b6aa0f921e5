"""Fashion-MNIST built offline from its original IDX files, as a TFDS array_record dataset.

Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files that
TFDS's own ``fashion_mnist`` builder downloads (60000 train / 10000 test, 28x28 grey,
10 classes). Where they are present this module writes them into the TFDS data dir
with ``Tensor`` features (``Image`` needs TensorFlow to encode), in their original
order, under ``fashion_mnist/from_idx/<version>``: beside TFDS's own
``fashion_mnist/<version>``, never over it. Records and keys (``image`` uint8
(28, 28, 1), ``label``) are those of TFDS's build, so the one image loader reads both.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from research.absl_logging import absl_errors_only
from research.data.data_dir import check_writable
from research.errors import DataError

log = logging.getLogger(__name__)

NAME = "fashion_mnist"
DEBIAN_IDX_DIR = "/usr/share/datasets/fashion-mnist"  # where dataset-fashion-mnist installs them
IMAGE_SHAPE = (28, 28, 1)
# TFDS's class names, in label order (zalandoresearch/fashion-mnist README).
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# split -> (images file, labels file), as named by the original release.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX headers: uint8 data, 3 and 1 dimensions


def idx_available(idx_dir: str | None) -> bool:
    """Whether all four IDX files are in ``idx_dir``."""
    files = [name for pair in IDX_FILES.values() for name in pair]
    return idx_dir is not None and all((Path(idx_dir) / name).is_file() for name in files)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in a gzipped IDX file (big-endian header: magic, then one int32 per dimension)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = np.frombuffer(data, ">i4", count=1)[0]
    if header != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {header}, want {magic})")
    ndim = magic & 0xFF
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {values.size} values for a {shape} array")
    return values.reshape(shape)


def read_split(idx_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28, 1) uint8, labels (N,) uint8) of one split."""
    images_file, labels_file = IDX_FILES[split]
    images = read_idx(Path(idx_dir) / images_file, IMAGES_MAGIC)[..., None]
    labels = read_idx(Path(idx_dir) / labels_file, LABELS_MAGIC)
    if len(images) != len(labels) or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{idx_dir}: {split} has images {images.shape} but labels {labels.shape}")
    return images, labels


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Fashion-MNIST from local IDX files, stored as TFDS "train" and "test" splits."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The original IDX files, records in file order, Tensor image features."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="from_idx", description="Built from local IDX files.")]
    code_path = epath.Path(__file__)  # outside a TFDS package: say where the code is (see digits.py)
    pkg_dir_path = code_path.parent

    def __init__(self, *, idx_dir: str | None = None, **kwargs):
        self.idx_dir = idx_dir
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Zalando's article images (Xiao, Rasul & Vollgraf 2017), from the IDX files.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            disable_shuffling=True,  # keep the original order: the stored splits are the release's
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        return {split: self._generate_examples(*read_split(self.idx_dir, split)) for split in IDX_FILES}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray) -> Iterator[tuple[int, dict]]:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image, "label": int(label)}


def prepare(data_dir: str, idx_dir: str | None) -> tfds.core.DatasetBuilder | None:
    """The builder of the local build in ``data_dir``, building it from ``idx_dir`` if needed.

    None when there is no local build and the IDX files are absent: the caller falls
    back to TFDS's own ``fashion_mnist``. Idempotent and safe to race, like digits.
    """
    muted = io.StringIO()
    with absl_errors_only(), contextlib.redirect_stdout(muted), contextlib.redirect_stderr(muted):
        builder = FashionMnistIdx(data_dir=data_dir, idx_dir=idx_dir)
        if builder.is_prepared():
            return builder
        if not idx_available(idx_dir):
            return None
        check_writable(data_dir, "Fashion-MNIST")
        log.info("Building Fashion-MNIST from the IDX files in %s (once, about 7 s)", idx_dir)
        try:
            builder.download_and_prepare(file_format="array_record")
        except OSError:
            if not builder.is_prepared():
                raise
        builder = FashionMnistIdx(data_dir=data_dir, idx_dir=idx_dir)  # reads the sizes just written
    log.info("Fashion-MNIST is ready in %s", builder.data_path)
    return builder
