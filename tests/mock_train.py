"""``python tests/mock_train.py <overrides>``: the real CLI, with TFDS datasets mocked.

MNIST, CIFAR-10 and the rest cannot be downloaded here; ``tfds.testing.mock_data``
stands in for the files while every line of the loading code runs as it would.
"""

import runpy
import sys

import tensorflow_datasets as tfds

if __name__ == "__main__":
    with tfds.testing.mock_data(num_examples=96):
        sys.argv = ["research.train", *sys.argv[1:]]
        runpy.run_module("research.train", run_name="__main__")
