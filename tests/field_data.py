"""A user's own data for the field checks: ``data._target_=tests.field_data.load``.

Digits-like arrays (8x8x1 images, 3 classes) under field names of the user's choosing, so
a test can hand the classification task fields it does not read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from research.data.arrays import make_dataset


def load(
    inputs: str = "x", targets: str = "y", batch_size: int = 8, eval_batch_size: int = 32, **_: Any
) -> Any:
    """Random images under ``inputs`` and labels under ``targets`` (other data keys are ignored)."""
    rng = np.random.default_rng(0)

    def split(num: int) -> dict[str, np.ndarray]:
        images = rng.integers(0, 17, (num, 8, 8, 1)).astype(np.float32)
        return {inputs: images, targets: rng.integers(0, 3, num).astype(np.int32)}

    splits = {"train": split(48), "val": split(16), "test": split(16)}
    return make_dataset(
        "own", splits, batch_size, eval_batch_size, input_shape=(8, 8, 1), num_classes=3,
        class_names=["a", "b", "c"],
    )  # fmt: skip
