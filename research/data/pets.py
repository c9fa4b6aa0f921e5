"""The Oxford-IIIT Pet segmentation set (TFDS ``oxford_iiit_pet``): photos with trimap masks.

TFDS stores each photo at its own size with a trimap of the same size: 1 pet, 2 background,
3 the border between them. Here every photo is resized (bilinear) and its trimap
(nearest) to ``image_size`` square, once, on the host; the mask becomes classes 0 pet,
1 background, 2 border (as the TensorFlow segmentation tutorial does). A record whose
mask is not of its photo's size, or holds another value, is a DataError naming it. The
validation split is carved out of TFDS "train" by ``split_seed``. Prepare it once on a
machine with internet: ``python -m research.data.prepare oxford_iiit_pet``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from research.data import tfds_source
from research.data.arrays import make_dataset
from research.data.base import Dataset
from research.data.splits import carve_validation
from research.data.transforms import Augment, make_transform
from research.errors import ConfigError, DataError

NAME = "oxford_iiit_pet"
CLASS_NAMES = ["pet", "background", "border"]  # trimap values 1, 2, 3


def read_records(source: Sequence[dict], indices: np.ndarray) -> list[dict]:
    """The records at ``indices``: one batched read where the source has it."""
    try:
        return source.__getitems__(indices.tolist())
    except (TypeError, AttributeError):  # mock_data's sources and plain lists
        return [source[int(i)] for i in indices]


def example(record: Mapping[str, Any], size: int, index: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(image (size, size, 3) uint8, mask (size, size) uint8 classes) of one TFDS record."""
    from PIL import Image  # only this dataset's loading needs PIL

    image, trimap = np.asarray(record["image"]), np.asarray(record["segmentation_mask"])
    if trimap.ndim == 3:
        trimap = trimap[..., 0]
    if trimap.shape != image.shape[:2]:
        raise DataError(
            f"{NAME} {split} record {index}: its mask is {trimap.shape[0]}x{trimap.shape[1]} but its image "
            f"{image.shape[0]}x{image.shape[1]}: each mask must have its image's size"
        )
    if trimap.min() < 1 or trimap.max() > len(CLASS_NAMES):
        raise DataError(f"{NAME} {split} record {index}: mask values must be the trimap's 1..3")
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    mask = Image.fromarray(trimap).resize((size, size), Image.NEAREST)
    return np.asarray(resized, np.uint8), np.asarray(mask, np.uint8) - 1


def read_split(source: Sequence[dict], indices: np.ndarray, size: int, split: str) -> dict[str, np.ndarray]:
    pairs = [
        example(r, size, int(i), split) for r, i in zip(read_records(source, indices), indices, strict=True)
    ]
    return {"image": np.stack([p[0] for p in pairs]), "mask": np.stack([p[1] for p in pairs])}


def load(
    data_dir: str,
    image_size: int,
    val_fraction: float,
    split_seed: int,
    batch_size: int,
    eval_batch_size: int,
    pixel_max: float,
    normalize: Mapping[str, Sequence[float]],
) -> Dataset:
    """``image`` (image_size, image_size, 3) uint8 and ``mask`` (image_size, image_size) uint8, 3 classes."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"data.image_size must be a positive integer, got {image_size!r}")
    _, sources = tfds_source.open_tfds(NAME, os.path.expanduser(data_dir), {"train": "train", "test": "test"})
    train, val = carve_validation(len(sources["train"]), val_fraction, split_seed)
    test = np.arange(len(sources["test"]))
    splits = {
        "train": read_split(sources["train"], train, image_size, "train"),
        "val": read_split(sources["train"], val, image_size, "train"),
        "test": read_split(sources["test"], test, image_size, "test"),
    }
    dataset = make_dataset(
        NAME,
        splits,
        batch_size,
        eval_batch_size,
        input_shape=(image_size, image_size, 3),
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
    )
    transform = make_transform(normalize["mean"], normalize["std"], pixel_max, Augment())
    return dataclasses.replace(dataset, transform=transform)
