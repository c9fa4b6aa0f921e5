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


# The name of the per-example weight the engine adds to evaluation batches: 1 for real
# examples, 0 for the padding that fills the last batch. Its own name, so a source's
# own fields (a token padding ``mask``) are never overwritten.
EVAL_WEIGHT = "eval_weight"


@dataclass
class Dataset:
    """Named arrays in splits, with what tasks need to size their models.

    A source may yield any fields (``image``/``label``, ``tokens``/``mask``, ``x``/``y``);
    ``input_shape`` and ``num_classes`` are set where they mean something, and
    ``info`` carries the rest a task or sampler needs (a vocabulary, a target scaler).
    """

    name: str
    input_shape: tuple[int, ...] | None  # one example of the main input, e.g. (8, 8, 1)
    num_classes: int | None  # None for regression, language modelling, unlabelled data
    splits: dict[str, Split]  # "train", "val", "test"
    transform: Transform
    batch_size: int
    eval_batch_size: int
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
