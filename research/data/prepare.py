"""Download and prepare a TFDS dataset once, as array_record files that training reads.

    pip install tensorflow-cpu importlib_resources      # once: needed to build, never to read
    python -m research.data.prepare mnist [--data_dir DIR]

Run it on a machine with internet, then copy ``DIR/<name>`` to the training
machines' TFDS data dir if they are offline. Building mnist, fashion_mnist or
cifar10 needs TensorFlow because TFDS encodes their ``Image`` features to PNG with
``tf.image.encode_png``; reading them back through ``tfds.data_source`` decodes with
PIL and needs no TensorFlow. TFDS 4.9 also imports ``importlib_resources`` when
building without declaring it (tensorflow/datasets#11212). Bundled datasets (digits) need no preparation: they
are built offline the first time a run loads them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import tensorflow_datasets as tfds

from research.data.tfds_source import BUNDLED
from research.errors import DataError, UserError

# Modules TFDS needs to build (not to read) image datasets, and the pip package of each.
BUILD_REQUIREMENTS = {"tensorflow": "tensorflow-cpu", "importlib_resources": "importlib_resources"}


def prepare(name: str, data_dir: str) -> str:
    """Build ``name`` into ``data_dir`` as array_record (no-op if present); returns its path."""
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"unknown TFDS dataset {name!r}; see https://www.tensorflow.org/datasets/catalog"
        ) from None
    if not builder.is_prepared():
        missing = [
            pkg for module, pkg in BUILD_REQUIREMENTS.items() if importlib.util.find_spec(module) is None
        ]
        if missing:
            raise DataError(
                f"building {name} needs `pip install {' '.join(missing)}` first (reading it does not)"
            )
        # The GCS mirror holds tfrecord files, which tfds.data_source cannot read.
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return os.fspath(builder.data_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="TFDS dataset name, e.g. mnist, fashion_mnist, cifar10")
    parser.add_argument(
        "--data_dir",
        default=os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"),
        help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
    )
    args = parser.parse_args(argv)
    if args.name in BUNDLED:
        print(f"{args.name} is bundled: it is built offline the first time a run loads it")
        return 0
    try:
        path = prepare(args.name, os.path.expanduser(args.data_dir))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.name} is ready in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
