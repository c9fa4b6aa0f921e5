"""Segmentation scenes composed from real Fashion-MNIST items, with their per-pixel class masks.

Each scene is a ``canvas`` x ``canvas`` black image holding ``min_items`` to ``max_items``
Fashion-MNIST items (28x28) pasted at uniform random positions, later items over earlier
ones where they overlap. An item's pixels are those brighter than ``mask_threshold``; the
mask holds 0 for background and ``label + 1`` for an item's visible pixels, so a scene's
image and mask agree pixel for pixel. The items of the train and val scenes come from
Fashion-MNIST's train split (val carved out by ``split_seed``, as for classification),
those of the test scenes from its test split: no item is seen in two splits. Each split
uses its items ``passes`` times, in a fresh random order each pass.

Scenes are composed once per (settings, items) and kept in the data dir as
``fashion_mnist_scenes/<digest>.npz``: the digest covers the settings and the items'
bytes, so different items (TFDS's mock data in tests) never share a cache file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from research.data import tfds_source
from research.data.arrays import SPLITS, make_dataset
from research.data.base import Dataset
from research.data.data_dir import check_writable
from research.data.transforms import Augment, make_transform
from research.errors import ConfigError

log = logging.getLogger(__name__)

FOLDER = "fashion_mnist_scenes"
SOURCE = "fashion_mnist"
BACKGROUND = "background"
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}  # each split's own generator: default_rng([seed, n])


@dataclasses.dataclass(frozen=True)
class Layout:
    """How scenes are composed (everything the cache digest covers, with the items)."""

    canvas: int
    min_items: int
    max_items: int
    mask_threshold: int
    passes: int
    seed: int

    def __post_init__(self) -> None:
        for key in ("canvas", "min_items", "max_items", "passes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
        if self.min_items > self.max_items:
            raise ConfigError(f"data.min_items={self.min_items} exceeds data.max_items={self.max_items}")
        if not 0 <= self.mask_threshold < 255:
            raise ConfigError(f"data.mask_threshold={self.mask_threshold} must be in [0, 255)")


def compose(
    images: np.ndarray, labels: np.ndarray, layout: Layout, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Scenes of ``images`` (N, h, w, 1) uint8 with ``labels`` (N,): ``image`` (S, canvas, canvas, 1)
    uint8, ``mask`` (S, canvas, canvas) uint8, and what was pasted where, in paste order:
    ``items`` (S, max_items) indices into ``images`` (-1: none) and ``positions`` (S, max_items, 2).
    """
    size = images.shape[1]
    if layout.canvas < size:
        raise ConfigError(f"data.canvas={layout.canvas} is smaller than the {size}x{size} items")
    order = np.concatenate([rng.permutation(len(images)) for _ in range(layout.passes)])
    counts = []
    while sum(counts) < len(order):
        counts.append(int(rng.integers(layout.min_items, layout.max_items + 1)))
    counts[-1] -= sum(counts) - len(order)  # the last scene takes what is left
    num = len(counts)
    items = np.full((num, layout.max_items), -1, np.int64)
    positions = np.zeros((num, layout.max_items, 2), np.int64)
    scene_images = np.zeros((num, layout.canvas, layout.canvas, 1), np.uint8)
    masks = np.zeros((num, layout.canvas, layout.canvas), np.uint8)
    start = 0
    for s, count in enumerate(counts):
        for j in range(count):
            index, (row, col) = order[start + j], rng.integers(0, layout.canvas - size + 1, 2)
            item = images[index]
            visible = item[..., 0] > layout.mask_threshold
            scene_images[s, row : row + size, col : col + size][visible] = item[visible]
            masks[s, row : row + size, col : col + size][visible] = labels[index] + 1
            items[s, j], positions[s, j] = index, (row, col)
        start += count
    return {"image": scene_images, "mask": masks, "items": items, "positions": positions}


def digest(layout: Layout, sources: Mapping[str, dict[str, np.ndarray]]) -> str:
    """A name for the scenes of ``layout`` over these items: changes with either."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(layout), sort_keys=True).encode())
    for split in SPLITS:
        for key in ("image", "label"):
            h.update(np.ascontiguousarray(sources[split][key]).tobytes())
    return h.hexdigest()[:16]


def cached_scenes(
    data_dir: str, layout: Layout, sources: Mapping[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """Every split's scenes: read from the data dir's cache, composed and written there on a miss."""
    path = Path(data_dir) / FOLDER / f"{digest(layout, sources)}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {split: {k: stored[f"{split}/{k}"] for k in ("image", "mask")} for split in SPLITS}
    log.info("Composing Fashion-MNIST scenes (once) into %s", path)
    scenes = {
        split: compose(
            sources[split]["image"], sources[split]["label"], layout, np.random.default_rng([layout.seed, n])
        )
        for split, n in SPLIT_STREAMS.items()
    }
    check_writable(str(path.parent), "the composed scenes")
    arrays = {f"{split}/{k}": scenes[split][k] for split in SPLITS for k in ("image", "mask")}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez(f, **arrays)
    os.replace(f.name, path)  # whole or absent: a racing run writes the same bytes
    return {split: {k: scenes[split][k] for k in ("image", "mask")} for split in SPLITS}


def load(
    data_dir: str,
    build: Mapping[str, Any] | None,
    val_fraction: float,
    split_seed: int,
    canvas: int,
    min_items: int,
    max_items: int,
    mask_threshold: int,
    passes: int,
    seed: int,
    batch_size: int,
    eval_batch_size: int,
    pixel_max: float,
    normalize: Mapping[str, Sequence[float]],
) -> Dataset:
    """Scenes as ``image`` (canvas, canvas, 1) uint8 and ``mask`` (canvas, canvas) uint8 (0: background,
    1 + the Fashion-MNIST label), 11 classes; ``normalize`` as the image datasets'."""
    layout = Layout(canvas, min_items, max_items, mask_threshold, passes, seed)
    data_dir = os.path.expanduser(data_dir)
    items = tfds_source.load(
        SOURCE, data_dir, 1, 1, val_fraction, split_seed, True, 255, {"mean": [0.0], "std": [1.0]}, {}, build
    )
    sources = {split: items.splits[split].arrays() for split in SPLITS}
    splits = cached_scenes(data_dir, layout, sources)
    if normalize.get("mean") is None or normalize.get("std") is None:
        raise ConfigError("data.normalize.mean and data.normalize.std must be set for the scenes")
    dataset = make_dataset(
        FOLDER,
        splits,
        batch_size,
        eval_batch_size,
        input_shape=(canvas, canvas, 1),
        num_classes=len(items.class_names) + 1,
        class_names=[BACKGROUND, *items.class_names],
        info={"layout": dataclasses.asdict(layout)},
    )
    transform = make_transform(normalize["mean"], normalize["std"], pixel_max, Augment())
    return dataclasses.replace(dataset, transform=transform)
