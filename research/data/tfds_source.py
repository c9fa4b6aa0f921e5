"""Image datasets from TFDS, read with ``tfds.data_source`` (no TensorFlow).

Classification datasets yield ``image`` and ``label``; datasets without supervised
keys but with an ``image`` feature (binarized_mnist) yield ``image`` alone and have
``num_classes`` None.

``load`` is the ``_target_`` of every data config. It never downloads: TFDS datasets
are prepared once with ``python -m research.data.prepare <name>`` (array_record
files, random access), bundled ones (digits) are built offline on first use, and so
is fashion_mnist where its original IDX files are installed (``fashion_mnist.py``).
Training never reads the test split; validation is carved out of TFDS "train".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from research.absl_logging import absl_errors_only
from research.data import digits, fashion_mnist
from research.data.base import Dataset
from research.data.splits import TFDSSplit, carve_validation
from research.data.transforms import Augment, make_transform
from research.errors import ConfigError, DataError

# Datasets that ship with a pip package and are built offline on first use:
# name -> prepare(data_dir, **build) returning a prepared TFDS builder.
BUNDLED: dict[str, Callable[..., tfds.core.DatasetBuilder]] = {"digits": digits.prepare}
# Datasets built offline from local files where those exist, else read from TFDS's own build:
# name -> prepare(data_dir, **build) returning a prepared builder, or None without the files.
LOCAL: dict[str, Callable[..., tfds.core.DatasetBuilder | None]] = {"fashion_mnist": fashion_mnist.prepare}
# What a user installs to get those local files.
LOCAL_HINTS = {
    "fashion_mnist": "`apt-get install dataset-fashion-mnist` (it puts the IDX files in data.build.idx_dir)"
}


def load(
    name: str,
    data_dir: str,
    batch_size: int,
    eval_batch_size: int,
    val_fraction: float,
    split_seed: int,
    in_memory: bool,
    pixel_max: float,
    normalize: Mapping[str, Sequence[float] | None],
    augment: Mapping[str, Any],
    build: Mapping[str, Any] | None = None,
    classes: Sequence[int] | None = None,
    labels_per_class: int | None = None,
) -> Dataset:
    """Open ``name`` from ``data_dir`` as train/val/test splits with an on-device transform.

    ``classes`` keeps only examples of those labels, renumbered 0..k-1 in the given order
    (pretraining on some classes and fine-tuning on the rest). ``labels_per_class`` keeps
    only that many training examples of each class, the first in a ``split_seed`` order
    (fine-tuning from few labels); val and test stay whole.

    ``in_memory`` false streams the train split with grain; val and test are always
    read into memory. ``normalize`` holds per-channel ``mean`` and ``std`` in units of ``pixel_max``;
    both null means "compute them from the train split". ``augment`` holds the
    fields of ``Augment``. ``build`` holds the options of a bundled or local build.
    """
    _check_batch_sizes(batch_size, eval_batch_size)
    data_dir = os.path.expanduser(data_dir)
    builder = _builder(name, data_dir, build)
    sources = _open_sources(builder, name, data_dir)
    image_key, label_key = _supervised_keys(builder, name)

    train, val = carve_validation(len(sources["train"]), val_fraction, split_seed)
    if batch_size > len(train):
        raise ConfigError(
            f"data.batch_size={batch_size} exceeds the {len(train)} training examples of {name}"
        )

    splits = _splits(sources, train, val, (image_key, label_key), in_memory)
    features = builder.info.features
    input_shape = tuple(features[image_key].shape)
    all_names = _class_names(features, label_key, name, classes, labels_per_class)
    splits = restrict(splits, len(all_names), classes, labels_per_class, split_seed, batch_size)
    transform_classes = None if classes is None else list(classes)
    names = all_names if classes is None else [all_names[c] for c in classes]
    mean, std = _normalization(normalize, splits["train"], pixel_max, channels=input_shape[-1])
    transform = make_transform(mean, std, pixel_max, Augment(**augment))
    return Dataset(
        name=name,
        input_shape=input_shape,
        num_classes=len(names) or None,  # None: unlabelled images (binarized_mnist)
        splits=splits,
        transform=relabel(transform, transform_classes, len(all_names)),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        class_names=names,
    )


def _splits(
    sources: dict, train: np.ndarray, val: np.ndarray, keys: tuple[str, str], in_memory: bool
) -> dict[str, TFDSSplit]:
    """Only training batches stream: the engine evaluates from arrays kept on device."""
    image_key, label_key = keys
    return {
        "train": TFDSSplit(sources["train"], train, image_key, label_key, in_memory=in_memory),
        "val": TFDSSplit(sources["train"], val, image_key, label_key, in_memory=True),
        "test": TFDSSplit(
            sources["test"], np.arange(len(sources["test"])), image_key, label_key, in_memory=True
        ),
    }


def _check_batch_sizes(batch_size: int, eval_batch_size: int) -> None:
    if batch_size <= 0 or eval_batch_size <= 0:
        raise ConfigError(
            f"data.batch_size and data.eval_batch_size must be positive, got {batch_size}, {eval_batch_size}"
        )


def restrict(
    splits: dict[str, TFDSSplit],
    num_classes: int,
    classes: Sequence[int] | None,
    labels_per_class: int | None,
    seed: int,
    batch_size: int,
) -> dict[str, TFDSSplit]:
    """The splits with only ``classes`` kept, and ``labels_per_class`` training examples of each."""
    if classes is not None:
        splits = keep_classes(splits, list(classes), num_classes)
    if labels_per_class is not None:
        splits = {**splits, "train": keep_per_class(splits["train"], labels_per_class, seed)}
        if batch_size > splits["train"].num_examples:
            raise ConfigError(
                f"data.batch_size={batch_size} exceeds the {splits['train'].num_examples} training examples "
                f"left by data.labels_per_class={labels_per_class}"
            )
    return splits


def keep_classes(splits: dict[str, TFDSSplit], classes: list[int], num_classes: int) -> dict[str, TFDSSplit]:
    """Each split restricted to the examples whose label is in ``classes``."""
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < num_classes for c in classes):
        raise ConfigError(f"data.classes={classes} must be distinct labels in [0, {num_classes})")
    out = {}
    for name, split in splits.items():
        labels = split.records.read_all()["label"] if not split.in_memory else split.arrays()["label"]
        kept = split.indices[np.isin(labels, classes)]
        out[name] = TFDSSplit(split.source, kept, split.image_key, split.label_key, in_memory=split.in_memory)
    return out


def keep_per_class(split: TFDSSplit, count: int, seed: int) -> TFDSSplit:
    """The first ``count`` examples of each label of ``split`` in a seeded random order."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ConfigError(f"data.labels_per_class must be a positive integer or null, got {count!r}")
    labels = split.records.read_all()["label"] if not split.in_memory else split.arrays()["label"]
    order = np.random.default_rng(seed).permutation(len(labels))
    kept = []
    for label in np.unique(labels):
        of_label = order[labels[order] == label]
        if len(of_label) < count:
            raise ConfigError(
                f"data.labels_per_class={count} exceeds the {len(of_label)} training examples "
                f"of label {label}"
            )
        kept.append(of_label[:count])
    indices = np.sort(split.indices[np.concatenate(kept)])
    return TFDSSplit(split.source, indices, split.image_key, split.label_key, in_memory=split.in_memory)


def relabel(transform: Any, classes: list[int] | None, num_classes: int) -> Any:
    """``transform`` followed by renumbering the kept labels 0..k-1 (on device, in the step)."""
    if classes is None:
        return transform
    lookup = np.zeros(num_classes, np.int32)
    lookup[classes] = np.arange(len(classes), dtype=np.int32)

    def relabelled(rng: Any, batch: dict, train: bool) -> dict:
        batch = transform(rng, batch, train)
        if "label" not in batch:  # images alone: inference (research.export, attacks)
            return batch
        return {**batch, "label": jnp.asarray(lookup)[batch["label"]]}

    return relabelled


def prepare_hint(name: str, data_dir: str) -> str:
    """The one line that tells a user how to get ``name`` into ``data_dir``."""
    local = f"; or {LOCAL_HINTS[name]}" if name in LOCAL_HINTS else ""
    return (
        f"{name} is not prepared in {data_dir}: on a machine with internet run "
        f"`pip install tensorflow-cpu importlib_resources && "
        f"python -m research.data.prepare {name} --data_dir {data_dir}` "
        f"and copy the folder here, or point data.data_dir (or TFDS_DATA_DIR) at a prepared copy{local}"
    )


def _builder(name: str, data_dir: str, build: Mapping[str, Any] | None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``name``; bundled datasets, and local ones whose files are
    present, are built here if they are missing (``data.build=null`` skips a local build)."""
    if name in BUNDLED:
        if build is None:
            raise ConfigError(f"data.build must hold the build options of the bundled dataset {name}")
        return BUNDLED[name](data_dir, **build)
    if name in LOCAL and build is not None:
        local = LOCAL[name](data_dir, **build)
        if local is not None:
            return local
    elif build is not None:
        raise ConfigError(
            f"data.build only applies to bundled datasets ({', '.join(BUNDLED)}) and local builds "
            f"({', '.join(LOCAL)}); remove it for {name}"
        )
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"unknown dataset {name!r}: data.name must be a TFDS name (e.g. mnist) or {sorted(BUNDLED)}"
        ) from None


def open_tfds(
    name: str, data_dir: str, splits: Mapping[str, str]
) -> tuple[tfds.core.DatasetBuilder, dict[str, Sequence[dict]]]:
    """(builder, {our split: random-access source of the TFDS split named by ``splits``}).

    For loaders of other kinds of TFDS data (text): the same checks and messages.
    """
    builder = _builder(name, data_dir, None)
    return builder, _open_sources(builder, name, data_dir, splits)


def _open_sources(
    builder: tfds.core.DatasetBuilder,
    name: str,
    data_dir: str,
    splits: Mapping[str, str] | None = None,
) -> dict[str, Sequence[dict]]:
    """Random-access "train" and "test" sources (or ``splits``), or a DataError saying how to prepare them.

    Nothing here downloads. What TFDS raises for missing or unreadable files varies, so
    the builder's own ``is_prepared`` decides which message applies.
    """
    splits = dict(splits or {"train": "train", "test": "test"})
    with absl_errors_only():  # the DataError below says it better than TFDS's warnings
        prepared = builder.is_prepared()
    if prepared and not set(splits.values()) <= set(builder.info.splits):
        raise DataError(
            f"{name} needs splits {sorted(set(splits.values()))}, it has {sorted(builder.info.splits)}"
        )
    try:
        return builder.as_data_source(split=splits)
    except Exception as err:
        if prepared:  # e.g. built by TensorFlow users as tfrecord, which only tf.data reads
            raise DataError(
                f"{name} in {builder.data_path} cannot be read with random access ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}); delete that folder and run "
                f"`python -m research.data.prepare {name} --data_dir {data_dir}`"
            ) from err
        raise DataError(prepare_hint(name, data_dir)) from err


def _supervised_keys(builder: tfds.core.DatasetBuilder, name: str) -> tuple[str, str | None]:
    """(image key, label key) of a classification dataset, or ("image", None) for images alone."""
    keys = builder.info.supervised_keys
    if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys
    if keys is None and "image" in builder.info.features:  # unlabelled images, e.g. binarized_mnist
        return "image", None
    raise DataError(
        f"{name} has neither (image, label) supervised keys nor an image feature: "
        "this loader reads image datasets"
    )


def _class_names(
    features: Any, label_key: str | None, name: str, classes: Any, labels_per_class: Any
) -> list[str]:
    """The label names in label order; none for unlabelled data, where class options make no sense."""
    if label_key is not None:
        return list(features[label_key].names)
    if classes is not None or labels_per_class is not None:
        raise ConfigError(
            f"data.classes and data.labels_per_class need labels; {name} has images only: set them to null"
        )
    return []


def _normalization(
    normalize: Mapping[str, Sequence[float] | None], train: TFDSSplit, pixel_max: float, channels: int
) -> tuple[Sequence[float], Sequence[float]]:
    """Per-channel (mean, std): from the config, or measured on the train split (one read)."""
    mean, std = normalize["mean"], normalize["std"]
    if (mean is None) != (std is None):
        raise ConfigError("data.normalize.mean and data.normalize.std must both be set or both be null")
    if mean is None:
        pixels = train.arrays()["image"]
        axes = tuple(range(pixels.ndim - 1))
        mean = pixels.mean(axis=axes, dtype=np.float64) / pixel_max
        std = pixels.std(axis=axes, dtype=np.float64) / pixel_max
        return mean.tolist(), std.tolist()
    if not len(mean) == len(std) == channels:
        raise ConfigError(
            f"data.normalize.mean and std need one value per channel ({channels}): {list(mean)}, {list(std)}"
        )
    return list(mean), list(std)
