"""Splits over a random-access TFDS source: which records, read whole or streamed.

A split is a TFDS data source plus the record indices that belong to it, so the
validation split can be carved out of TFDS "train" without copying anything. Small
datasets are read once into numpy arrays (``arrays()``) that the engine puts on
device; a large training split is streamed through a grain pipeline
(``iterator()``) whose state is saved with the checkpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from research.errors import ConfigError


def carve_validation(num_examples: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint (train, val) record indices: a fixed random ``val_fraction`` held out.

    The seed is the data config's ``split_seed``, not the run seed, so every run and
    every seed of a sweep is validated on the same examples.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    num_val = round(val_fraction * num_examples)
    if not 0 < num_val < num_examples:
        raise ConfigError(
            f"data.val_fraction={val_fraction} leaves an empty split of {num_examples} examples"
        )
    order = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def carve(
    num_examples: int,
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Sorted, disjoint {"train", "val", "test"} indices: ``test_fraction`` of all examples held
    out as test, then ``val_fraction`` of the rest as val; a fraction of 0 carves nothing (the
    user brings that split). With ``labels``, every class is held out in proportion (within one
    example per split); without, a plain shuffle.

    The seed is the data's ``split_seed``, never the run seed, so every run and every seed of a
    sweep sees the same split. Unstratified, the split is the one ``arrays.random_split`` gives.
    """
    for key, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"data.{key} must be in [0, 1), got {value}")
    num_test = round(test_fraction * num_examples)
    num_val = round(val_fraction * (num_examples - num_test))
    for split, fraction, count in (("test", test_fraction, num_test), ("val", val_fraction, num_val)):
        if fraction and not count:
            raise ConfigError(
                f"data.{split}_fraction={fraction} of {num_examples} examples leaves the {split} split empty"
            )
    if num_test + num_val >= num_examples:
        raise ConfigError(
            f"data.test_fraction={test_fraction} and data.val_fraction={val_fraction} leave no "
            f"training examples of {num_examples}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_examples) if labels is None else _stratified_order(np.asarray(labels), rng)
    parts = {"test": order[:num_test], "val": order[num_test : num_test + num_val]}
    parts["train"] = order[num_test + num_val :]
    return {name: np.sort(parts[name]) for name in ("train", "val", "test")}


def _stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All positions, ordered so that every prefix holds each class in proportion: each class is
    shuffled and its i-th member of n placed at (i + 0.5) / n, ties broken at random.
    """
    key = np.empty(len(labels))
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        key[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.random(len(labels)), key))


class Records:
    """The chosen records of a TFDS source as {"image": uint8 array, "label": int32}: a grain source.

    With ``label_key`` None (unlabelled data such as binarized_mnist) records hold the image alone.
    """

    def __init__(self, source: Sequence[dict], indices: np.ndarray, image_key: str, label_key: str | None):
        self.source, self.indices = source, indices
        self.image_key, self.label_key = image_key, label_key

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.example(self.source[int(self.indices[i])])

    def example(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.label_key is None:
            return {"image": np.asarray(record[self.image_key])}
        return {"image": np.asarray(record[self.image_key]), "label": np.int32(record[self.label_key])}

    def read_all(self) -> dict[str, np.ndarray]:
        """Every chosen record, stacked."""
        try:
            records = self.source.__getitems__(self.indices.tolist())  # one batched read: ~5x faster
        except (TypeError, AttributeError):  # mock_data's sources and plain lists read one record at a time
            records = [self.source[int(i)] for i in self.indices]
        examples = [self.example(record) for record in records]
        keys = ("image",) if self.label_key is None else ("image", "label")
        return {key: np.stack([e[key] for e in examples]) for key in keys}


@dataclass
class TFDSSplit:
    """One split (see ``research.data.base.Split``) over the records ``indices`` of ``source``."""

    source: Sequence[dict]
    indices: np.ndarray
    image_key: str
    label_key: str | None  # None: unlabelled images
    in_memory: bool
    _arrays: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False)

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    @functools.cached_property
    def records(self) -> Records:
        return Records(self.source, self.indices, self.image_key, self.label_key)

    def arrays(self) -> dict[str, np.ndarray]:
        """{"image": (N, H, W, C) raw pixels, "label": (N,) int32 where labelled}, read on first call.

        Kept when the split is ``in_memory`` (the engine and the normalisation
        statistics both read it); read afresh otherwise.
        """
        if not self.in_memory:
            return self.records.read_all()
        if self._arrays is None:
            self._arrays = self.records.read_all()
        return self._arrays

    def iterator(self, batch_size: int, seed: int, shard_index: int, shard_count: int) -> Any:
        """Endless shuffled batches of this process's shard, reshuffled every epoch.

        ``get_state``/``set_state`` on the returned grain iterator resume it exactly.
        """
        import grain  # only streaming runs pay for importing grain

        dataset = grain.MapDataset.source(self.records)[shard_index::shard_count]
        dataset = dataset.shuffle(seed).repeat().batch(batch_size, drop_remainder=True)
        return iter(dataset.to_iter_dataset())
