"""What an image folder holds: its files, their classes and splits, read from names alone.

Two layouts, as Keras's ``image_dataset_from_directory`` and Hugging Face's ``imagefolder`` read
them: ``path/<class>/*.png`` (splits carved by rule), or ``path/{train,val,test}/<class>/...``
when the user split it already (a missing ``val`` or ``test`` is carved from ``train``). Class
names are the folder names in sorted order, the same on every machine. Each file is listed with
its size and modification time: the key that tells a cached conversion from a changed folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research.data.splits import carve
from research.errors import ConfigError, DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Files:
    """Image files with their labels (indices into the class names), sizes and times."""

    paths: tuple[str, ...]
    labels: np.ndarray  # (N,) int32
    sizes: tuple[int, ...]
    mtimes: tuple[int, ...]  # st_mtime_ns

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices: np.ndarray) -> Files:
        pick = [int(i) for i in indices]
        return Files(
            tuple(self.paths[i] for i in pick),
            self.labels[pick].astype(np.int32),
            tuple(self.sizes[i] for i in pick),
            tuple(self.mtimes[i] for i in pick),
        )

    def key(self, root: str, *settings: object) -> str:
        """A digest of every file's name, size and time (relative to ``root``) and ``settings``."""
        digest = hashlib.sha256(repr(settings).encode())
        prefix = len(os.path.join(root, ""))  # the paths are under root: cut it off, no relpath per file
        rows = zip(self.paths, self.labels.tolist(), self.sizes, self.mtimes, strict=True)
        digest.update(
            "".join(f"{p[prefix:]}\0{label}\0{size}\0{mtime}\n" for p, label, size, mtime in rows).encode()
        )
        return digest.hexdigest()[:20]


def _images_under(folder: Path) -> list[os.DirEntry]:
    """Every image file under ``folder`` (subfolders too), in sorted order; hidden names skipped."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += _images_under(Path(entry.path))
        elif entry.name.lower().endswith(EXTENSIONS):
            found.append(entry)
    return found


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _classes_of(folder: Path) -> dict[str, list[os.DirEntry]]:
    """{class name: its image files} of one split folder; an empty class or split is one line."""
    names = _subfolders(folder)
    if not names:
        raise DataError(
            f"{folder} holds no class folders: put the images in {folder}/<class name>/ "
            f"({', '.join(EXTENSIONS)})"
        )
    out = {}
    for name in names:
        files = _images_under(folder / name)
        if not files:
            raise DataError(f"the class folder {folder / name} holds no images ({', '.join(EXTENSIONS)})")
        out[name] = files
    return out


def scan(path: str) -> tuple[list[str], dict[str, Files]]:
    """(class names, {split folder: its files}): {"all": ...} for class folders at the top,
    else {"train": ..., "val"?: ..., "test"?: ...} for a folder the user split.
    """
    root = Path(os.path.abspath(os.path.expanduser(path)))
    if not root.is_dir():
        raise DataError(f"data.path={path}: no such folder (want <path>/<class name>/*.png)")
    top = _subfolders(root)
    split_folders = [s for s in SPLITS if s in top]
    if split_folders:
        others = [name for name in top if name not in SPLITS]
        if "train" not in split_folders or others:
            raise DataError(
                f"{root} mixes split folders ({', '.join(split_folders)}) with "
                f"{'other folders: ' + ', '.join(others) if others else 'no train/'}: use "
                "<path>/train/<class>/... (val/ and test/ optional), or <path>/<class>/... alone"
            )
        found = {split: _classes_of(root / split) for split in split_folders}
    else:
        found = {"all": _classes_of(root)}
    names = sorted(found.get("train", found.get("all")))
    for split, classes in found.items():
        extra = sorted(set(classes) - set(names))
        if extra:
            raise DataError(f"{root / split} has classes that train/ lacks: {', '.join(extra)}")
    return names, {split: _files(classes, names) for split, classes in found.items()}


def _files(classes: dict[str, list[os.DirEntry]], names: list[str]) -> Files:
    paths, labels, sizes, mtimes = [], [], [], []
    for name, entries in classes.items():
        for entry in entries:
            stat = entry.stat()
            paths.append(entry.path)
            labels.append(names.index(name))
            sizes.append(stat.st_size)
            mtimes.append(stat.st_mtime_ns)
    return Files(tuple(paths), np.asarray(labels, np.int32), tuple(sizes), tuple(mtimes))


def split_files(
    found: dict[str, Files], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, Files]:
    """{"train", "val", "test"}: the user's split folders, the rest carved from train (or from all
    of them) by ``splits.carve``, stratified by class with the data's ``split_seed``."""
    source = found.get("train", found.get("all"))
    carved = carve(
        len(source),
        test_fraction=0.0 if "test" in found else test_fraction,
        val_fraction=0.0 if "val" in found else val_fraction,
        seed=seed,
        labels=source.labels,
    )
    out = {split: found[split] if split in found else source.take(carved[split]) for split in SPLITS}
    out["train"] = source.take(carved["train"])
    for split in SPLITS:
        if not len(out[split]):
            fraction = "val_fraction" if split == "val" else "test_fraction"
            raise DataError(
                f"the {split} split is empty: set data.{fraction} > 0 or give it a {split}/ folder"
            )
    return out


def describe(found: dict[str, Files], seed: int) -> dict[str, str]:
    """Where each split came from, in words (``Dataset.info``, shown by research.inspect)."""
    source = "train/" if "train" in found else "the class folders"
    carved = [split for split in SPLITS if split not in found]
    out = {split: f"{split}/" for split in SPLITS if split in found}
    for split in carved:
        out[split] = f"carved from {source}, stratified by class (split_seed={seed})"
    if carved and "train" in found:
        out["train"] = "train/ less the carved images"
    return out


def keep_classes(
    splits: dict[str, Files], names: list[str], classes: Sequence[int | str]
) -> tuple[dict[str, Files], list[str]]:
    """Only the files of ``classes`` (indices into ``names`` or names), relabelled 0..k-1 in that order."""
    chosen = []
    for c in classes:
        index = names.index(c) if isinstance(c, str) and c in names else c
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(names):
            raise ConfigError(
                f"data.classes: {c!r} is neither a class folder nor a label in [0, {len(names)})"
            )
        chosen.append(index)
    if not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError(f"data.classes={list(classes)} must name distinct classes")
    lookup = np.full(len(names), -1, np.int32)
    lookup[chosen] = np.arange(len(chosen), dtype=np.int32)
    out = {}
    for split, files in splits.items():
        kept = files.take(np.flatnonzero(lookup[files.labels] >= 0))
        out[split] = Files(kept.paths, lookup[kept.labels], kept.sizes, kept.mtimes)
        if not len(kept):
            raise DataError(f"the {split} split holds no images of data.classes={list(classes)}")
    return out, [names[i] for i in chosen]


def keep_per_class(files: Files, count: int, seed: int) -> Files:
    """The first ``count`` files of each class in a ``seed`` order (fine-tuning from few labels)."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ConfigError(f"data.labels_per_class must be a positive integer or null, got {count!r}")
    order = np.random.default_rng(seed).permutation(len(files))
    kept = []
    for label in np.unique(files.labels):
        of_label = order[files.labels[order] == label]
        if len(of_label) < count:
            raise ConfigError(
                f"data.labels_per_class={count} exceeds the {len(of_label)} training images of class {label}"
            )
        kept.append(of_label[:count])
    return files.take(np.sort(np.concatenate(kept)))
