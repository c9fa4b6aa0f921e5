"""Splits held as numpy arrays: what every non-TFDS source (text, tabular, synthetic) returns.

A source computes its examples once (windows of a corpus, standardised rows, generated
sequences) and hands them over as a dict of arrays with a leading example axis; the
engine puts them on device and gathers batches by index. ``iterator`` streams the same
rows through grain for the rare source too big for device memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from research.data.base import Batch, Dataset
from research.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class _Rows:
    """Row ``i`` of every array: a random-access source for grain."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {key: value[i] for key, value in self.arrays.items()}


@dataclass
class ArraySplit:
    """One split (see ``research.data.base.Split``) whose examples are already in memory."""

    data: dict[str, np.ndarray]
    in_memory: bool = True

    def __post_init__(self) -> None:
        lengths = {key: len(value) for key, value in self.data.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"every field needs the same number of examples, got {lengths}")

    @property
    def num_examples(self) -> int:
        return len(next(iter(self.data.values())))

    def arrays(self) -> dict[str, np.ndarray]:
        return self.data

    def iterator(self, batch_size: int, seed: int, shard_index: int, shard_count: int) -> Any:
        """Endless shuffled batches of this process's shard; ``get_state``/``set_state`` resume it."""
        import grain  # only streaming runs pay for importing grain

        dataset = grain.MapDataset.source(_Rows(self.data))[shard_index::shard_count]
        dataset = dataset.shuffle(seed).repeat().batch(batch_size, drop_remainder=True)
        return iter(dataset.to_iter_dataset())


def identity_transform(rng: Any, batch: Batch, train: bool) -> Batch:
    """The transform of sources whose arrays are already what the model reads."""
    del rng, train
    return batch


def check_batch_sizes(batch_size: int, eval_batch_size: int) -> None:
    if batch_size <= 0 or eval_batch_size <= 0:
        raise ConfigError(
            f"data.batch_size and data.eval_batch_size must be positive, got {batch_size}, {eval_batch_size}"
        )


def check_fraction(key: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"data.{key} must be in (0, 1), got {value}")


def check_not_empty(name: str, sizes: dict[str, int], hint: str = "") -> None:
    """A DataError naming the first empty split and (``hint``) the config keys that size it."""
    for split in SPLITS:
        if not sizes.get(split):
            raise DataError(f"the {split} split of {name} is empty" + (f": {hint}" if hint else ""))


def random_split(
    num_examples: int, test_fraction: float, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Sorted, disjoint train/val/test indices: ``test_fraction`` of all examples held out,
    then ``val_fraction`` of the rest, both chosen by ``seed`` (the data's split seed,
    never the run seed, so every run of a sweep sees the same split)."""
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction)
    order = np.random.default_rng(seed).permutation(num_examples)
    num_test = round(test_fraction * num_examples)
    num_val = round(val_fraction * (num_examples - num_test))
    parts = {"test": order[:num_test], "val": order[num_test : num_test + num_val]}
    parts["train"] = order[num_test + num_val :]
    return {name: np.sort(parts[name]) for name in SPLITS}


def make_dataset(
    name: str,
    splits: dict[str, dict[str, np.ndarray]],
    batch_size: int,
    eval_batch_size: int,
    *,
    input_shape: tuple[int, ...] | None,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    info: dict[str, Any] | None = None,
    empty_hint: str = "",
) -> Dataset:
    """A ``Dataset`` of in-memory splits, checked: no split empty, one training batch fits.

    ``empty_hint`` names the config keys that size the splits, for the error message.
    """
    check_batch_sizes(batch_size, eval_batch_size)
    sizes = {split: len(next(iter(splits[split].values()))) if splits.get(split) else 0 for split in SPLITS}
    check_not_empty(name, sizes, empty_hint)
    num_train = len(next(iter(splits["train"].values())))
    if batch_size > num_train:
        raise ConfigError(f"data.batch_size={batch_size} exceeds the {num_train} training examples of {name}")
    return Dataset(
        name=name,
        input_shape=input_shape,
        num_classes=num_classes,
        splits={split: ArraySplit(splits[split]) for split in SPLITS},
        transform=identity_transform,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        class_names=list(class_names or []),
        info=dict(info or {}),
    )
