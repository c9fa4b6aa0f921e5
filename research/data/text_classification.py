"""Text classification from TFDS (``imdb_reviews``): word-level tokens, padded, with masks.

A word-level HF ``tokenizers`` vocabulary is trained on the training examples only
(TFDS "train" minus the validation examples carved out of it): the ``vocab_size - 2``
most frequent words, after ``[PAD]`` (id 0) and ``[UNK]`` (id 1); any other word maps to
``[UNK]``. Text is lower-cased (``lowercase``), IMDb's ``<br />`` line breaks become
spaces, and words are split at whitespace and punctuation (punctuation marks are words).

Truncation rule: a text of more than ``max_length`` tokens keeps its last
``max_length`` tokens when ``truncate_from: start`` (Keras ``pad_sequences``' default,
as in the classic Keras IMDb recipes), its first ones when ``truncate_from: end``.
Shorter texts are padded at the end with ``[PAD]``; ``mask`` is 1 on real tokens.

Tokenising 50000 reviews takes tens of seconds, so it happens once: the arrays and
the tokenizer's JSON are cached in ``<data_dir>/tokenized/<name>/<key>/``, the key a
hash of every setting and of the dataset's identity; a second run reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from research.data.arrays import SPLITS, check_not_empty, make_dataset
from research.data.base import Dataset
from research.data.data_dir import check_writable
from research.data.splits import carve_validation
from research.data.text import as_text
from research.errors import ConfigError

log = logging.getLogger(__name__)

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
TRUNCATE_FROM = ("start", "end")
EMPTY_HINT = "data.val_fraction sizes val; TFDS's own splits size train and test"


def train_tokenizer(texts: Sequence[str], vocab_size: int, lowercase: bool, min_frequency: int) -> Any:
    """A word-level HF tokenizer with ``[PAD]``=0 and ``[UNK]``=1, trained on ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    steps = [normalizers.Replace("<br />", " "), normalizers.NFKC()]
    tokenizer.normalizer = normalizers.Sequence(steps + ([normalizers.Lowercase()] if lowercase else []))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def pad_or_truncate(
    ids: Sequence[Sequence[int]], max_length: int, truncate_from: str
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (N, max_length) int32, mask (N, max_length) float32) by the module's rule."""
    tokens = np.full((len(ids), max_length), PAD_ID, np.int32)
    mask = np.zeros((len(ids), max_length), np.float32)
    for row, sequence in enumerate(ids):
        kept = sequence[-max_length:] if truncate_from == "start" else sequence[:max_length]
        tokens[row, : len(kept)] = kept
        mask[row, : len(kept)] = 1.0
    return tokens, mask


def _read(source: Sequence[dict], text_key: str, label_key: str) -> tuple[list[str], np.ndarray]:
    try:
        records = source.__getitems__(list(range(len(source))))  # one batched read
    except (TypeError, AttributeError):  # tfds.testing.mock_data's source reads one at a time
        records = [source[i] for i in range(len(source))]
    texts = [as_text(r[text_key]) for r in records]
    return texts, np.array([int(r[label_key]) for r in records], np.int32)


def _read_splits(
    sources: dict, text_key: str, label_key: str, val_fraction: float, split_seed: int
) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Texts and labels of train, val (carved from TFDS "train" as for images) and test."""
    train_texts, train_labels = _read(sources["train"], text_key, label_key)
    test_texts, test_labels = _read(sources["test"], text_key, label_key)
    train, val = carve_validation(len(train_texts), val_fraction, split_seed)
    texts = {
        "train": [train_texts[i] for i in train],
        "val": [train_texts[i] for i in val],
        "test": test_texts,
    }
    return texts, {"train": train_labels[train], "val": train_labels[val], "test": test_labels}


def _cache_key(settings: dict, sources: dict[str, Sequence[dict]], text_key: str) -> str:
    """Settings plus a fingerprint of the data (sizes, first and last texts): four reads, not 50000."""
    ends = {
        s: [len(src), *(as_text(src[i][text_key]) for i in (0, len(src) - 1))] for s, src in sources.items()
    }
    blob = json.dumps({"settings": settings, "data": ends}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _save(folder: Path, arrays: dict[str, np.ndarray], tokenizer_json: str, meta: dict) -> None:
    """Write the cache into a private folder, then rename it into place (racing runs both succeed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    np.savez(tmp / "arrays.npz", **arrays)
    (tmp / "tokenizer.json").write_text(tokenizer_json)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process cached the same key first
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def _tokenize(
    texts: dict[str, list[str]], labels: dict[str, np.ndarray], settings: dict
) -> tuple[dict[str, np.ndarray], str]:
    """({"<split>_<field>": array}, tokenizer JSON): the work the cache saves."""
    tokenizer = train_tokenizer(
        texts["train"], settings["vocab_size"], settings["lowercase"], settings["min_frequency"]
    )
    arrays = {f"{split}_label": labels[split] for split in SPLITS}
    for split in SPLITS:
        ids = [e.ids for e in tokenizer.encode_batch(texts[split])]
        tokens, mask = pad_or_truncate(ids, settings["max_length"], settings["truncate_from"])
        arrays[f"{split}_tokens"], arrays[f"{split}_mask"] = tokens, mask.astype(bool)  # 1/4 the bytes
        arrays[f"{split}_length"] = np.array([len(i) for i in ids], np.int32)  # before truncation
    return arrays, tokenizer.to_str()


def _check_settings(truncate_from: str, **sizes: int) -> None:
    if truncate_from not in TRUNCATE_FROM:
        raise ConfigError(f"data.truncate_from must be one of {TRUNCATE_FROM}, got {truncate_from!r}")
    for key, value in sizes.items():
        least = 3 if key == "vocab_size" else 1  # the vocabulary holds [PAD] and [UNK] and a word
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"data.{key} must be an integer >= {least}, got {value!r}")


def load(
    name: str,
    data_dir: str,
    text_key: str,
    label_key: str,
    vocab_size: int,
    max_length: int,
    truncate_from: str,
    lowercase: bool,
    min_frequency: int,
    val_fraction: float,
    split_seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """``tokens`` (max_length,) int32, ``mask`` (max_length,) float32, ``label`` int32 per example."""
    from research.data.tfds_source import open_tfds

    _check_settings(truncate_from, vocab_size=vocab_size, max_length=max_length, min_frequency=min_frequency)
    data_dir = os.path.expanduser(data_dir)
    builder, sources = open_tfds(name, data_dir, {"train": "train", "test": "test"})
    sizes = {split: len(source) for split, source in sources.items()}
    check_not_empty(name, {**sizes, "val": 1}, EMPTY_HINT)  # val: carve_validation checks it
    settings = {
        "name": name, "version": str(builder.version), "vocab_size": vocab_size, "max_length": max_length,
        "truncate_from": truncate_from, "lowercase": lowercase, "min_frequency": min_frequency,
        "val_fraction": val_fraction, "split_seed": split_seed, "text_key": text_key, "label_key": label_key,
    }  # fmt: skip
    folder = Path(data_dir) / "tokenized" / name / _cache_key(settings, sources, text_key)
    if not (folder / "arrays.npz").is_file():
        log.info("Tokenizing %s once (cached in %s)", name, folder)
        check_writable(data_dir, f"the tokenized {name}")
        texts, labels = _read_splits(sources, text_key, label_key, val_fraction, split_seed)
        _save(folder, *_tokenize(texts, labels, settings), settings)
    with np.load(folder / "arrays.npz") as stored:
        arrays = dict(stored)
    tokenizer_json = (folder / "tokenizer.json").read_text()
    arrays.update({f"{s}_mask": arrays[f"{s}_mask"].astype(np.float32) for s in SPLITS})
    fields = {s: {f: arrays[f"{s}_{f}"] for f in ("tokens", "mask", "label")} for s in SPLITS}
    label_feature = builder.info.features[label_key]
    return make_dataset(
        name,
        fields,
        batch_size,
        eval_batch_size,
        input_shape=(max_length,),
        num_classes=label_feature.num_classes,
        class_names=list(label_feature.names),
        info=_info(arrays, tokenizer_json, max_length, truncate_from, folder),
        empty_hint=EMPTY_HINT,
    )


def _info(arrays: dict, tokenizer_json: str, max_length: int, truncate_from: str, folder: Path) -> dict:
    """Vocabulary, tokenizer (``research.data.text.from_info`` rebuilds it), what truncation cost."""
    vocab = json.loads(tokenizer_json)["model"]["vocab"]
    itos = sorted(vocab, key=vocab.get)
    real = {s: arrays[f"{s}_mask"] > 0 for s in SPLITS}
    return {
        "tokenizer": "word",
        "tokenizer_json": tokenizer_json,
        "vocab": itos,
        "vocab_size": len(itos),
        "pad_id": PAD_ID,
        "unk_id": UNK_ID,
        "max_length": max_length,
        "truncate_from": truncate_from,
        "truncated_fraction": {s: float(np.mean(arrays[f"{s}_length"] > max_length)) for s in SPLITS},
        "unknown_fraction": {s: float(np.mean(arrays[f"{s}_tokens"][real[s]] == UNK_ID)) for s in SPLITS},
        "cache_dir": os.fspath(folder),
    }
