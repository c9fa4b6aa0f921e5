"""``python tests/mock_speech_commands.py <overrides>``: the real CLI with TFDS's speech_commands mocked.

TFDS's Audio feature needs TensorFlow even to describe the dataset, and this project reads
without it; so instead of ``tfds.testing.mock_data`` (which builds the builder) the TFDS opening
(``tfds_source.open_tfds``) returns records shaped as speech_commands' own: ``audio`` int16 at
16 kHz, up to 1 s, and ``label`` over its 12 classes (``_unknown_`` included, to be left out).
"""

import runpy
import sys

import numpy as np

from research.data import tfds_source


def records(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"audio": rng.integers(-3000, 3000, int(rng.integers(8000, 16001))).astype(np.int16), "label": i % 12}
        for i in range(count)
    ]


def open_tfds(name, data_dir, splits):
    data = {"train": records(96, 0), "validation": records(24, 1), "test": records(24, 2)}
    return None, {ours: data[theirs] for ours, theirs in splits.items()}


if __name__ == "__main__":
    tfds_source.open_tfds = open_tfds
    sys.argv = ["research.train", *sys.argv[1:]]
    runpy.run_module("research.train", run_name="__main__")
