"""Where a user's own files are, and which rows make each split: shared by data=table and data=arrays.

``data.path`` is one file (every split carved from it by ``test_fraction``, ``val_fraction``
and ``split_seed``) or a folder of the user's own splits, ``train.<ext>`` with ``val.<ext>``
and ``test.<ext>`` where the user has them; a split the folder lacks is carved from train.
Carving is stratified by class where the data has labels (``splits.carve``), and the
seed is the data's, never the run's, so every run of a sweep sees the same split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from research.data.arrays import SPLITS
from research.data.splits import carve
from research.errors import ConfigError, DataError

WHOLE = "all"  # the part name of a single file that every split is carved from


def locate(path: str | None, suffixes: Sequence[str], what: str) -> dict[str, Path]:
    """{"all": file}, or the folder's {"train": file, "val": file?, "test": file?}; one line if neither.

    ``what`` names the kind of file in the messages ("a CSV or Parquet table").
    """
    if not path:
        raise ConfigError(
            f"data.path is required: {what} or a folder of train/val/test files (data.path=...)"
        )
    root = Path(os.path.expanduser(str(path)))
    if not root.exists():
        raise DataError(f"data.path={path} does not exist")
    if root.is_file():
        if root.suffix.lower() not in suffixes:
            raise DataError(f"data.path={path} is not {what} (a file ending {', '.join(suffixes)})")
        return {WHOLE: root}
    found = {}
    for split in SPLITS:
        for suffix in suffixes:
            if (root / f"{split}{suffix}").is_file():
                found[split] = root / f"{split}{suffix}"
                break
    if "train" not in found:
        names = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
        raise DataError(
            f"data.path={path} is a folder without train{suffixes[0]} (it holds {names}): give the "
            f"folder train/val/test{suffixes[0]} files, or point data.path at one file"
        )
    return found


def plan(
    sizes: dict[str, int],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
) -> dict[str, tuple[str, np.ndarray]]:
    """{split: (part, rows of that part)}: the user's own parts as they are, the rest carved.

    ``sizes`` holds the rows of each part ``locate`` found; ``labels`` are the class labels of
    the part carved from ("all", else "train"), to stratify by.
    """
    source = WHOLE if WHOLE in sizes else "train"
    carved = carve(
        sizes[source],
        test_fraction=0.0 if "test" in sizes else test_fraction,
        val_fraction=0.0 if "val" in sizes else val_fraction,
        seed=seed,
        labels=labels,
    )
    return {
        split: (split, np.arange(sizes[split]))
        if split in sizes and split != source
        else (source, carved[split])
        for split in SPLITS
    }


def describe(parts: dict[str, Path], rows: dict[str, tuple[str, np.ndarray]], seed: int) -> dict[str, str]:
    """Where each split came from, in words, for ``Dataset.info`` and research.inspect."""
    carved_from = {part for split, (part, _) in rows.items() if part != split}
    out = {}
    for split, (part, _) in rows.items():
        name = parts[part].name
        if part != split:
            out[split] = f"carved from {name} (split_seed={seed})"
        else:
            out[split] = f"{name} less the carved rows" if part in carved_from else name
    return out


def stem(files: dict[str, Path]) -> str:
    """The data's name: the one file's stem, else the folder's name."""
    unique = set(files.values())
    return next(iter(unique)).stem if len(unique) == 1 else next(iter(unique)).parent.name
