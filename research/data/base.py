"""What a data source hands the engine: splits plus an on-device transform."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Batch = dict[str, Any]
# transform(rng, batch, train) -> batch; jittable. Normalises raw examples and,
# when train=True, augments them. It runs inside the compiled step, on device.
Transform = Callable[[Any, Batch, bool], Batch]


class Split(Protocol):
    """One split (train, val or test)."""

    num_examples: int
    in_memory: bool

    def arrays(self) -> dict[str, np.ndarray]:
        """All examples as raw arrays (only when ``in_memory``): placed on device once."""

    def iterator(self, batch_size: int, seed: int, shard_index: int, shard_count: int) -> Any:
        """A checkpointable grain iterator of raw numpy batches (when not ``in_memory``).

        It yields dicts of arrays with ``batch_size`` rows and has ``get_state``/``set_state``.
        """


@dataclass
class Dataset:
    name: str
    input_shape: tuple[int, ...]  # one example, e.g. (8, 8, 1)
    num_classes: int
    splits: dict[str, Split]  # "train", "val", "test"
    transform: Transform
    batch_size: int
    eval_batch_size: int
    class_names: list[str] = field(default_factory=list)
