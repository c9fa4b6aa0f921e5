"""A user's own numpy arrays as ``data=arrays``: named fields with a leading example axis.

``data.path`` is one of:
  - a ``.npz`` file: its arrays are the fields (``image``/``label``, ``x``/``y``, any names);
    arrays named ``<field>_train``, ``<field>_val``, ``<field>_test`` (Keras' ``mnist.npz``
    layout) are the user's own splits;
  - a ``.npy`` file: one field, named by the file (``image.npy``);
  - a folder of ``<field>.npy`` files, or of ``train.npz`` with ``val.npz``/``test.npz``.
Splits the files do not hold are carved (``own_files``): stratified by ``label`` where it is
an integer class label, by ``split_seed``. ``fields`` renames arrays to the names a task
reads (``{image: x, label: y}``: the classification task reads ``image`` and ``label``).

An ``image`` field ((N, H, W) or (N, H, W, C)) is scaled by ``pixel_max``, augmented on
training batches and normalised per channel (measured on the train split when
``normalize`` is null), with the transforms every image source uses, so an image recipe's
``data.augment`` works here; other fields reach the model as they are.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from research.data import own_files
from research.data.arrays import SPLITS, identity_transform, make_dataset
from research.data.base import Dataset, Transform
from research.data.transforms import Augment, make_transform
from research.errors import ConfigError, DataError

INPUTS = ("image", "x", "tokens", "inputs")  # the field whose shape sizes the model, first found
LABEL = "label"


def read(file: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npz or .npy file (no pickled objects); an unreadable one is one line naming it."""
    try:
        if file.suffix.lower() == ".npy":
            return {file.stem: np.load(file, allow_pickle=False)}
        with np.load(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{file} cannot be read as numpy arrays ({first})") from None


def read_parts(path: str | None) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Path]]:
    """({part: {field: array}}, {part: file}): "all" for one set of arrays, else train/val/test."""
    root = Path(os.path.expanduser(str(path))) if path else None
    if root is not None and root.is_dir() and not (root / "train.npz").is_file():
        files = sorted(root.glob("*.npy"))
        if files:  # a folder of <field>.npy files: one set of arrays
            arrays = {}
            for file in files:
                arrays.update(read(file))
            return {own_files.WHOLE: arrays}, {own_files.WHOLE: root}
    files = own_files.locate(path, (".npz", ".npy"), "a .npz or .npy file")
    parts = {part: read(file) for part, file in files.items()}
    if own_files.WHOLE in parts:
        by_suffix = _split_by_suffix(parts[own_files.WHOLE])
        if by_suffix:
            return by_suffix, {part: files[own_files.WHOLE] for part in by_suffix}
    return parts, files


def _split_by_suffix(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]] | None:
    """{split: {field: array}} when every array is named ``<field>_<split>`` and train is there."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        field, _, split = key.rpartition("_")
        if split not in SPLITS or not field:
            return None
        parts.setdefault(split, {})[field] = value
    return parts if "train" in parts else None


def rename(
    parts: dict[str, dict[str, np.ndarray]], files: dict[str, Path], fields: dict[str, str] | None
) -> dict[str, dict[str, np.ndarray]]:
    """Each part's arrays under the task's names (``fields``: {name: the array's key}), checked:
    every key present and every array of a part as long as the others."""
    out = {}
    for part, arrays in parts.items():
        for name, key in (fields or {}).items():
            if key not in arrays:
                raise DataError(
                    f"data.fields.{name}={key!r} is not an array of {files[part]}: "
                    f"its arrays are {', '.join(sorted(arrays))}"
                )
        mapped = dict(fields or {})
        renamed = {name: arrays[key] for name, key in mapped.items()}
        renamed.update({k: v for k, v in arrays.items() if k not in mapped.values() and k not in renamed})
        scalar = [k for k, v in renamed.items() if v.ndim == 0]
        if scalar:
            raise DataError(f"array {scalar[0]!r} of {files[part]} is a scalar: fields need an example axis")
        lengths = {key: len(value) for key, value in renamed.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise DataError(f"the arrays of {files[part]} hold different numbers of examples ({shown})")
        if not lengths or not next(iter(lengths.values())):
            raise DataError(f"{files[part]} holds no examples ({', '.join(lengths) or 'no arrays'})")
        out[part] = renamed
    names = {part: sorted(a) for part, a in out.items()}
    if len({tuple(n) for n in names.values()}) > 1:
        raise DataError(f"the parts of data.path={list(files.values())[0]} hold different fields: {names}")
    return out


def image_transform(
    train_images: np.ndarray, pixel_max: float | None, normalize: dict[str, Any], augment: dict[str, Any]
) -> tuple[Transform, str]:
    """(transform, what it does in words): scale by ``pixel_max`` (null: the largest value of
    ``train_images``), augment the training batches, normalise per channel (``normalize`` null:
    measured on ``train_images``)."""
    if pixel_max is None:  # the brightest training pixel maps to 1 (16 for scikit-learn's digits)
        pixel_max = float(train_images.max()) or 1.0
    mean, std = normalize.get("mean"), normalize.get("std")
    if (mean is None) != (std is None):
        raise ConfigError("data.normalize.mean and data.normalize.std must both be set or both be null")
    channels = train_images.shape[-1]
    where = "from data.normalize" if mean is not None else "measured on the train split"
    if mean is None:
        axes = tuple(range(train_images.ndim - 1))
        mean = (train_images.mean(axis=axes, dtype=np.float64) / pixel_max).tolist()
        std = (train_images.std(axis=axes, dtype=np.float64) / pixel_max).tolist()
    elif not len(mean) == len(std) == channels:
        raise ConfigError(
            f"data.normalize.mean and std need one value per channel ({channels}): {list(mean)}, {list(std)}"
        )
    words = (
        f"image: (pixels / {pixel_max:g} - mean) / std per channel, mean {[round(m, 4) for m in mean]} "
        f"std {[round(v, 4) for v in std]} ({where}); augment {augment}"
    )
    return make_transform(mean, std, float(pixel_max), Augment(**augment)), words


def load(
    path: str | None,
    fields: dict[str, str] | None,
    class_names: list[str] | None,
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
    pixel_max: float | None,
    normalize: dict[str, Any],
    augment: dict[str, Any],
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """The arrays at ``path`` as a Dataset (see the module docstring)."""
    parts, files = read_parts(path)
    parts = rename(parts, files, fields)
    for arrays in parts.values():
        if "image" in arrays and arrays["image"].ndim == 3:  # (N, H, W): one channel
            arrays["image"] = arrays["image"][..., None]
    carved_from = parts.get(own_files.WHOLE, parts.get("train"))
    labels = carved_from.get(LABEL)
    classes = labels is not None and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)
    sizes = {part: len(next(iter(a.values()))) for part, a in parts.items()}
    rows = own_files.plan(sizes, test_fraction, val_fraction, split_seed, labels if classes else None)
    splits = {s: {k: v[index] for k, v in parts[part].items()} for s, (part, index) in rows.items()}
    num_classes, names = _classes(splits, files, class_names) if classes else (None, [])
    train = splits["train"]
    words = "none: the arrays reach the model as they are"
    if "image" in train:
        transform, words = image_transform(train["image"], pixel_max, normalize, augment)
    elif any(augment.values()):
        raise ConfigError(
            f"data.augment works on an image field; data.path={path} gives {sorted(train)}: "
            "name one with data.fields={image: <array>}, or set the augment values to 0/false"
        )
    else:
        transform = identity_transform
    main = next((f for f in INPUTS if f in train), next(iter(train)))
    dataset = make_dataset(
        f"arrays:{own_files.stem(files)}", splits, batch_size, eval_batch_size,
        input_shape=tuple(train[main].shape[1:]), num_classes=num_classes, class_names=names,
        info={"fields": sorted(train), "split_seed": split_seed, "normalization": words,
              "splits": own_files.describe(files, rows, split_seed)},
        empty_hint="give that split examples, or change data.test_fraction or data.val_fraction",
    )  # fmt: skip
    dataset.transform = transform
    return dataset


def _classes(
    splits: dict[str, dict[str, np.ndarray]], files: dict[str, Path], class_names: list[str] | None
) -> tuple[int, list[str]]:
    """(number of classes, their names): ``class_names``, else "0".."k-1" for labels 0..k-1."""
    labels = np.concatenate([splits[s][LABEL] for s in SPLITS])
    where = list(files.values())[0]
    if labels.min() < 0:
        raise DataError(f"the label array of {where} holds {labels.min()}: class labels are 0, 1, 2, ...")
    count = int(labels.max()) + 1
    if class_names is not None and len(class_names) < count:
        raise ConfigError(
            f"data.class_names names {len(class_names)} classes but {where} holds labels up to {count - 1}"
        )
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(count)]
    if len(np.unique(splits["train"][LABEL])) < 2:
        raise DataError(
            f"the label array of {where} holds one class in the train split: classification needs two or more"
        )
    return len(names), names
