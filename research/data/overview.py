"""What a dataset holds, seen before training: sizes, classes, fields, ranges, and one picture.

Written against the ``Dataset``/``Split`` interface alone, so it serves every source (the
user's own tables, arrays and image folders, TFDS, text). ``describe`` is the printed table;
``picture`` is a PNG: a grid of a batch *after* the transform (and, on the train split, the
augmentation the model will see) where there are images, else histograms of each feature
and of the target, as the data reaches the model (``kd.inspect``'s batch plot and Keras'
``image_dataset_from_directory`` demos do the same). ``python -m research.inspect``
composes the config and calls both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from research import images
from research.data.base import Dataset

SHOWN = 36  # images in the grid (6 x 6)
PANELS = 16  # feature histograms at most (the target's is added)
BINS = 30
HISTOGRAM_EXAMPLES = 4096  # examples the histograms are drawn from, at most
IMAGE_DPI = 100
PANEL_INCHES = 1.6  # the side of one image or histogram panel


def batch_of(dataset: Dataset, split: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """Up to ``count`` raw examples of ``split``, a seeded random choice (read whole where in memory)."""
    source = dataset.splits[split]
    if source.in_memory:
        arrays = source.arrays()
        size = len(next(iter(arrays.values())))
        pick = np.sort(np.random.default_rng(seed).permutation(size)[: min(count, size)])
        return {k: np.asarray(v[pick]) for k, v in arrays.items()}
    return {k: np.asarray(v) for k, v in next(source.iterator(count, seed, 0, 1)).items()}


def transformed(
    dataset: Dataset, batch: dict[str, np.ndarray], train: bool, seed: int
) -> dict[str, np.ndarray]:
    """``batch`` through the dataset's transform, augmentation included when ``train``."""
    import jax

    out = dataset.transform(jax.random.key(seed), dict(batch), train)
    return {k: np.asarray(v) for k, v in out.items()}


def class_counts(dataset: Dataset) -> dict[str, list[int]] | None:
    """{split: examples per class} from integer ``label`` fields held in memory; None without."""
    if not dataset.num_classes:
        return None
    out = {}
    for name, split in dataset.splits.items():
        if not split.in_memory or "label" not in split.arrays():
            return None
        out[name] = np.bincount(np.asarray(split.arrays()["label"]), minlength=dataset.num_classes).tolist()
    return out


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def _range(values: np.ndarray) -> tuple[str, str]:
    if not values.size or not np.issubdtype(values.dtype, np.number):
        return "-", "-"
    return f"{values.min():.4g}", f"{values.max():.4g}"


def describe(dataset: Dataset, split: str, seed: int = 0, batch_size: int = 256) -> str:
    """The printed overview: splits, classes, raw fields, the transformed batch, the scaling used."""
    sources = dataset.info.get("splits", {})
    lines = [f"data: {dataset.name}  input shape {dataset.input_shape}  classes {dataset.num_classes}", ""]
    rows = [[s, d.num_examples, sources.get(s, "")] for s, d in dataset.splits.items()]
    lines += _table(["split", "examples", "from"], rows) + [""]
    counts = class_counts(dataset)
    if counts:
        names = dataset.class_names or [str(i) for i in range(dataset.num_classes)]
        rows = [[name, *[counts[s][i] for s in counts]] for i, name in enumerate(names)]
        lines += _table(["class", *counts], rows) + [""]
    raw = batch_of(dataset, split, batch_size, seed)
    after = transformed(dataset, raw, split == "train", seed)
    rows = [[k, str(v.dtype), str(tuple(v.shape[1:])), *_range(v)] for k, v in raw.items()]
    lines += [f"fields of {len(next(iter(raw.values())))} {split} examples, raw:"]
    lines += _table(["field", "dtype", "shape", "min", "max"], rows) + [""]
    augmented = " and any augmentation" if split == "train" else ""
    rows = [
        [k, str(v.dtype), *_range(v), f"{v.mean():.4g}", f"{v.std():.4g}"]
        for k, v in after.items()
        if np.issubdtype(v.dtype, np.number)
    ]
    lines += [f"as the model reads them, after the transform{augmented}:"]
    lines += _table(["field", "dtype", "min", "max", "mean", "std"], rows)
    if "vocab_size" in dataset.info:
        lines += [
            "",
            f"vocabulary: {dataset.info['vocab_size']} tokens ({dataset.info.get('tokenizer', '?')})",
        ]
    scaling = dataset.info.get("normalization")
    if scaling:
        lines += ["", f"normalisation: {scaling}"]
    return "\n".join(lines)


def picture(dataset: Dataset, split: str, seed: int = 0) -> np.ndarray:
    """(H, W, 4) uint8: a grid of transformed images with their class names, else histograms."""
    grid = len(dataset.input_shape or ()) == 3 and "image" in _fields(dataset, split)
    raw = batch_of(dataset, split, SHOWN if grid else HISTOGRAM_EXAMPLES, seed)
    after = transformed(dataset, raw, split == "train", seed)
    if grid:
        return _image_grid(dataset, after, split)
    return _histograms(dataset, after, split)


def _fields(dataset: Dataset, split: str) -> list[str]:
    source = dataset.splits[split]
    return list(source.arrays()) if source.in_memory else ["image"]


def _image_grid(dataset: Dataset, batch: dict[str, np.ndarray], split: str) -> np.ndarray:
    """Each image stretched to [0, 1] over the batch (it is normalised), titled by its class."""
    plt = images.pyplot()
    shown = batch["image"]
    low, high = shown.min(), shown.max()
    shown = (shown - low) / max(high - low, 1e-12)
    columns = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * PANEL_INCHES, rows * PANEL_INCHES), dpi=IMAGE_DPI
    )
    names = dataset.class_names
    for i, ax in enumerate(np.asarray(axes).reshape(-1)):
        ax.axis("off")
        if i >= len(shown):
            continue
        image = shown[i]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        if "label" in batch:
            label = int(batch["label"][i])
            ax.set_title(names[label] if label < len(names) else str(label), fontsize=8)
    fig.suptitle(f"{dataset.name}: {split}, after the transform", fontsize=9)
    fig.tight_layout()
    return images.figure_array(fig)


def _histograms(dataset: Dataset, batch: dict[str, np.ndarray], split: str) -> np.ndarray:
    """One histogram per feature column of the main input (named from ``info``), then the target."""
    plt = images.pyplot()
    inputs = next((k for k in ("image", "x", "tokens") if k in batch), next(iter(batch)))
    features = batch[inputs].reshape(len(batch[inputs]), -1)
    names = list(dataset.info.get("feature_names") or [f"{inputs}[{i}]" for i in range(features.shape[1])])
    panels = [(names[i], features[:, i]) for i in range(min(features.shape[1], PANELS))]
    if features.shape[1] > PANELS:  # wide inputs (token ids, pixels): one panel of every value
        panels = [(f"{inputs} (all {features.shape[1]} values)", features.reshape(-1))]
    target = next((k for k in ("label", "y") if k in batch and k != inputs), None)
    if target is not None:
        values = batch[target].reshape(-1).astype(np.float64)
        if target == "y" and dataset.info.get("y_std") is not None:  # in the target's own units
            values = values * dataset.info["y_std"] + dataset.info.get("y_mean", 0.0)
        panels.append((f"target: {dataset.info.get('target', target)}", values))
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    size = (columns * PANEL_INCHES * 1.5, rows * PANEL_INCHES)
    fig, axes = plt.subplots(rows, columns, figsize=size, dpi=IMAGE_DPI, squeeze=False)
    for ax, (name, values) in zip(axes.reshape(-1), panels, strict=False):
        if target == "label" and name.startswith("target"):
            counts = np.bincount(values.astype(np.int64), minlength=dataset.num_classes or 0)
            ax.bar(range(len(counts)), counts)
            ax.set_xticks(range(len(counts)), (dataset.class_names or list(map(str, range(len(counts))))))
            ax.tick_params(axis="x", labelsize=6, rotation=45)
        else:
            ax.hist(values, bins=BINS)
        ax.set_title(str(name)[:28], fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.reshape(-1)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{dataset.name}: {split} as the model reads it", fontsize=9)
    fig.tight_layout()
    return images.figure_array(fig)


def save_png(image: np.ndarray, path: Any) -> None:
    """Write an (H, W, 3|4) uint8 array as a PNG."""
    from PIL import Image

    Image.fromarray(np.asarray(image, np.uint8)).save(path)
