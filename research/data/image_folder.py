"""Your own images: ``data=image_folder data.path=<folder>`` (``<folder>/<class name>/*.png``).

The folder is read by name (``file_index``), decoded once into a cached ArrayRecord file
(``image_cache``), and handed to the engine like any image source: the same on-device
normalisation and ``data.augment`` transforms as the TFDS datasets, the same ``image``/``label``
fields, so every image task runs on it. A train split that fits ``data.memory_budget_mb`` (or
``data.in_memory=true``) goes to device once; a larger one (or ``in_memory=false``) streams from
the cache through grain worker processes, its iterator position saved with each checkpoint, and
each process of a multi-process run decodes and reads only its own shard of the training files.
Val and test are always held in memory: the engine evaluates from device arrays.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from research.data import file_index, image_cache
from research.data.arrays import ArraySplit, check_batch_sizes
from research.data.base import Dataset
from research.data.image_cache import Decoding, Part
from research.data.transforms import Augment, make_transform
from research.errors import ConfigError


def load(
    path: str,
    image_size: Sequence[int],
    channels: int | None,
    interpolation: str,
    batch_size: int,
    eval_batch_size: int,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    in_memory: bool | None,
    memory_budget_mb: float,
    cache_dir: str,
    workers: int,
    images_per_worker: int,
    pixel_max: float,
    normalize: Mapping[str, Sequence[float] | None],
    augment: Mapping[str, Any],
    classes: Sequence[int | str] | None = None,
    labels_per_class: int | None = None,
    shard: tuple[int, int] | None = None,
) -> Dataset:
    """Train/val/test splits of the images under ``path``, decoded to ``image_size`` and ``channels``.

    ``in_memory`` null decides by size: the decoded train split in memory when it fits
    ``memory_budget_mb``. ``shard`` = (index, count) is the process's share of a streamed train
    split (default: ``jax.process_index()``, ``jax.process_count()``).
    """
    check_batch_sizes(batch_size, eval_batch_size)
    _check_workers(workers)
    decoding = Decoding(tuple(int(n) for n in image_size), channels, interpolation)
    root = os.path.abspath(os.path.expanduser(path))
    names, found = file_index.scan(path)
    files, names = _chosen(found, names, val_fraction, test_fraction, split_seed, classes, labels_per_class)
    if batch_size > len(files["train"]):
        raise ConfigError(
            f"data.batch_size={batch_size} exceeds the {len(files['train'])} training images of {path}"
        )

    def cached(split: str, of: file_index.Files) -> Part:
        processes = min(workers, len(of) // max(images_per_worker, 1))  # a worker takes seconds to start
        return image_cache.part(of, root, split, decoding, cache_dir, processes)

    splits, parts, streamed = _decoded(files, cached, in_memory, memory_budget_mb, shard)
    shape = parts["val"].shape
    measured_on = "val" if streamed else "train"
    mean, std = _normalization(normalize, splits[measured_on], pixel_max, shape[-1])
    words = _in_words(mean, std, pixel_max, normalize, measured_on, augment)
    return Dataset(
        name=os.path.basename(root),
        input_shape=shape,
        num_classes=len(names),
        splits=splits,
        transform=make_transform(mean, std, pixel_max, Augment(**augment)),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        class_names=list(names),
        info={
            "path": root,
            "split_seed": split_seed,
            "splits": file_index.describe(found, split_seed),
            "normalization": words,
            "streamed": streamed,
        },
    )


def _check_workers(workers: Any) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"data.workers must be a whole number >= 0 (0: decode in the main process), got {workers}"
        )


def _decoded(
    files: dict[str, file_index.Files],
    cached: Callable[[str, file_index.Files], Part],
    in_memory: bool | None,
    memory_budget_mb: float,
    shard: tuple[int, int] | None,
) -> tuple[dict[str, Any], dict[str, Part], bool]:
    """(splits, their cache parts, streamed): val and test in memory; train in memory when it fits
    (or ``in_memory`` says so), else streamed from this process's own share of the files."""
    parts = {split: cached(split, files[split]) for split in ("val", "test")}
    streamed = not _fits(in_memory, len(files["train"]), parts["val"].shape, memory_budget_mb)
    if streamed:  # this process decodes and reads only its own share of the training files
        index, count = shard or _process_shard()
        own = files["train"].take(np.arange(index, len(files["train"]), count))
        parts["train"] = cached(f"train-{index}-of-{count}", own)
        train = StreamedSplit(parts["train"], len(files["train"]), (index, count))
    else:
        parts["train"] = cached("train", files["train"])
        train = _in_memory(parts["train"])
    image_cache.check_channels(parts)
    return (
        {"train": train, "val": _in_memory(parts["val"]), "test": _in_memory(parts["test"])},
        parts,
        streamed,
    )


def _in_words(
    mean: Sequence[float],
    std: Sequence[float],
    pixel_max: float,
    normalize: Mapping,
    measured_on: str,
    augment: Mapping,
) -> str:
    """What the transform does, for ``Dataset.info`` (research.inspect prints it)."""
    where = "from data.normalize" if normalize["mean"] is not None else f"measured on the {measured_on} split"
    return (
        f"image: (pixels / {pixel_max:g} - mean) / std per channel, mean {[round(m, 4) for m in mean]} "
        f"std {[round(v, 4) for v in std]} ({where}); augment {dict(augment)}"
    )


def _chosen(
    found: dict[str, file_index.Files],
    names: list[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    classes: Sequence[int | str] | None,
    labels_per_class: int | None,
) -> tuple[dict[str, file_index.Files], list[str]]:
    """({split: its files}, class names): the splits carved, then the chosen classes and labels kept."""
    files = file_index.split_files(found, val_fraction, test_fraction, seed)
    if classes is not None:
        files, names = file_index.keep_classes(files, names, classes)
    if labels_per_class is not None:
        files["train"] = file_index.keep_per_class(files["train"], labels_per_class, seed)
    return files, names


def _fits(in_memory: bool | None, num_train: int, shape: tuple[int, ...], budget_mb: float) -> bool:
    if in_memory is not None:
        return bool(in_memory)
    return num_train * int(np.prod(shape)) <= budget_mb * 2**20


def _process_shard() -> tuple[int, int]:
    import jax

    return jax.process_index(), jax.process_count()


def _in_memory(part: Part) -> ArraySplit:
    return ArraySplit({"image": part.read_all(), "label": part.labels.astype(np.int32)})


def _normalization(
    normalize: Mapping[str, Sequence[float] | None], split: Any, pixel_max: float, channels: int
) -> tuple[Sequence[float], Sequence[float]]:
    """Per-channel (mean, std) from the config, or measured: on the train split when it is in
    memory, else on val (which every process of a multi-process run holds whole, so all agree)."""
    mean, std = normalize["mean"], normalize["std"]
    if (mean is None) != (std is None):
        raise ConfigError("data.normalize.mean and data.normalize.std must both be set or both be null")
    if mean is None:
        pixels = split.arrays()["image"]
        axes = tuple(range(pixels.ndim - 1))
        return (
            (pixels.mean(axis=axes, dtype=np.float64) / pixel_max).tolist(),
            (pixels.std(axis=axes, dtype=np.float64) / pixel_max).tolist(),
        )
    if not len(mean) == len(std) == channels:
        raise ConfigError(
            f"data.normalize.mean and std need one value per channel ({channels}): {list(mean)}, {list(std)}"
        )
    return list(mean), list(std)


class _ReadBatch:
    """A batch of record indices -> {"image": (B, H, W, C) uint8, "label": (B,) int32}: one batched
    read of the part, not a Python call per image."""

    def __init__(self, part: Part):
        self.path, self.labels, self.shape = str(part.path), part.labels, part.shape
        self._source = None

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        if self._source is None:  # opened where it reads
            import grain

            self._source = grain.sources.ArrayRecordDataSource([self.path])
        records = self._source.__getitems__(indices.tolist())
        images = np.frombuffer(b"".join(records), np.uint8).reshape(len(records), *self.shape)
        return {"image": images, "label": self.labels[indices].astype(np.int32)}


@dataclass
class StreamedSplit:
    """The train split streamed from its cached part (see ``research.data.base.Split``)."""

    part: Part
    num_examples: int  # of every process's shard together: the epoch the engine counts
    shard: tuple[int, int]
    in_memory: bool = False

    def arrays(self) -> dict[str, np.ndarray]:
        """This process's shard, read whole (for checks that need it; training streams it)."""
        return {"image": self.part.read_all(), "label": self.part.labels.astype(np.int32)}

    def iterator(self, batch_size: int, seed: int, shard_index: int, shard_count: int) -> Any:
        """Endless batches of this process's shard, reshuffled every epoch, read ahead by grain's
        threads (the pixels are decoded already); ``get_state``/``set_state`` resume it exactly."""
        import grain

        if (shard_index, shard_count) != self.shard:
            raise ConfigError(
                f"the training images were sharded for process {self.shard[0]} of {self.shard[1]}, "
                f"but process {shard_index} of {shard_count} reads them"
            )
        order = grain.MapDataset.range(len(self.part)).shuffle(seed).repeat()
        batches = order.batch(batch_size, drop_remainder=True).map(_ReadBatch(self.part))
        return iter(batches.to_iter_dataset())
