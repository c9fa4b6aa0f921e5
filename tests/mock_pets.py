"""``python tests/mock_pets.py <overrides>``: the real CLI with TFDS's oxford_iiit_pet mocked.

TFDS's own mock draws each feature's free dimensions apart (a 40x12 photo with a 7x31 mask)
and pixel values for the trimap; these records keep each mask at its photo's size and its
values in the trimap's 1..3, at sizes that differ from photo to photo. ``MOCK_PETS_BAD_MASK=1``
makes one training mask a row short: the loader's check must say so in one line.
"""

import os
import runpy
import sys

import numpy as np
import tensorflow_datasets as tfds


def records(count: int, seed: int, bad: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        height, width = rng.integers(20, 48, 2)
        trimap = rng.integers(1, 4, (height - (bad and i == 3), width, 1)).astype(np.uint8)
        image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        out.append({"image": image, "segmentation_mask": trimap, "label": i % 37, "species": i % 2})
    return out


def as_data_source(self, split, **kwargs):
    bad = os.environ.get("MOCK_PETS_BAD_MASK") == "1"
    data = {"train": records(48, 0, bad), "test": records(24, 1, False)}
    return {ours: data[theirs] for ours, theirs in split.items()}


if __name__ == "__main__":
    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        sys.argv = ["research.train", *sys.argv[1:]]
        runpy.run_module("research.train", run_name="__main__")
