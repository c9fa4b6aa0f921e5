"""Parallel text (source -> target) as padded character ids, for sequence-to-sequence tasks.

``PairTokenizer`` is one character vocabulary shared by both sides (so the model may tie
its embeddings): ids 0-3 are ``<pad>``, ``<s>`` (begin), ``</s>`` (end) and ``<unk>``, then
every character of the training pairs in code-point order. Examples hold ``source``
(N, source_len) ids, padded with ``<pad>``, and ``target`` (N, target_len + 2):
``<s>`` + the target's characters + ``</s>``, padded. The decoder reads ``target[:, :-1]``
and is scored on ``target[:, 1:]`` (teacher forcing).

The vocabulary comes from the training split only: characters the other splits hold map
to ``<unk>`` there (their share is in ``info.unknown_fraction``), while text a user gives
a trained model (``encode(..., strict=True)``) must be inside it, or it is one line.
``load_tfds`` reads TFDS translation datasets (``ted_hrlr_translate``, ``wmt14_translate``)
with ``tfds.data_source``, never downloading.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from research.data.arrays import SPLITS, make_dataset
from research.data.base import Dataset
from research.data.text import as_text
from research.errors import ConfigError, DataError

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(len(SPECIALS))
KIND = "pair_char"
UNK_CHAR = "\ufffd"  # what an unknown id decodes to (as research/data/text.py)
SHOWN_UNKNOWN = 5  # unknown characters named in the one-line error


class PairTokenizer:
    """Characters <-> int32 ids with the four special tokens first."""

    kind = KIND

    def __init__(self, itos: Sequence[str]):
        if tuple(itos[: len(SPECIALS)]) != SPECIALS or any(len(c) != 1 for c in itos[len(SPECIALS) :]):
            raise ValueError(f"itos must be {SPECIALS} then single characters")
        self.itos = list(itos)
        self.stoi = {c: i for i, c in enumerate(self.itos) if i >= len(SPECIALS)}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> PairTokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls([*SPECIALS, *sorted(chars)])

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str, strict: bool = False) -> np.ndarray:
        """(len(text),) int32 ids; an unknown character is ``<unk>``, or with ``strict`` one line."""
        if strict:
            unknown = sorted({c for c in text if c not in self.stoi})
            if unknown:
                shown = ", ".join(repr(c) for c in unknown[:SHOWN_UNKNOWN])
                raise DataError(
                    f"the input {text!r} holds {len(unknown)} character(s) outside the model's vocabulary "
                    f"({shown}): use only characters of its training data"
                )
        return np.array([self.stoi.get(c, UNK_ID) for c in text], np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The characters up to the first ``</s>``; padding and ``<s>`` are dropped."""
        out = []
        for i in np.asarray(ids).reshape(-1):
            if i == EOS_ID:
                break
            if i == UNK_ID:
                out.append(UNK_CHAR)
            elif i >= len(SPECIALS):
                out.append(self.itos[int(i)])
        return "".join(out)

    def info(self) -> dict[str, Any]:
        return {
            "tokenizer": self.kind, "vocab": self.itos, "vocab_size": self.vocab_size,
            "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID, "unk_id": UNK_ID,
        }  # fmt: skip


def from_info(info: dict[str, Any]) -> PairTokenizer:
    """The tokenizer of a dataset made here, from its ``info``."""
    if info.get("tokenizer") != KIND:
        raise ConfigError(f"the data holds no text pairs (tokenizer={info.get('tokenizer')!r})")
    return PairTokenizer(info["vocab"])


def encode_pairs(
    pairs: Sequence[tuple[str, str]], tokenizer: PairTokenizer, source_len: int, target_len: int
) -> tuple[dict[str, np.ndarray], float]:
    """({"source", "target"} padded ids, the fraction of pairs cut to fit the lengths)."""
    source = np.full((len(pairs), source_len), PAD_ID, np.int32)
    target = np.full((len(pairs), target_len + 2), PAD_ID, np.int32)
    cut = 0
    for row, (src, tgt) in enumerate(pairs):
        s, t = tokenizer.encode(src), tokenizer.encode(tgt)
        cut += len(s) > source_len or len(t) > target_len
        source[row, : min(len(s), source_len)] = s[:source_len]
        t = t[:target_len]
        target[row, 0], target[row, 1 : len(t) + 1], target[row, len(t) + 1] = BOS_ID, t, EOS_ID
    return {"source": source, "target": target}, cut / max(len(pairs), 1)


def pairs_dataset(
    name: str,
    pairs: dict[str, Sequence[tuple[str, str]]],
    source_len: int,
    target_len: int,
    batch_size: int,
    eval_batch_size: int,
    truncate: bool,
    info: dict | None = None,
) -> Dataset:
    """Padded ids of every split under the training pairs' vocabulary.

    Without ``truncate``, a pair longer than the lengths is one line (generated data must fit).
    """
    for key, value in (("source_len", source_len), ("target_len", target_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
    tokenizer = PairTokenizer.fit(s + t for s, t in pairs["train"])
    splits, cut = {}, {}
    for split in SPLITS:
        splits[split], cut[split] = encode_pairs(pairs[split], tokenizer, source_len, target_len)
        if cut[split] and not truncate:
            longest = max(len(s) for s, _ in pairs[split]), max(len(t) for _, t in pairs[split])
            raise DataError(
                f"the {split} split of {name} holds sources up to {longest[0]} and targets up to "
                f"{longest[1]} characters: raise data.source_len={source_len} / data.target_len={target_len}"
            )
    unknown = {
        s: float(np.mean(np.concatenate([a.ravel() for a in splits[s].values()]) == UNK_ID)) for s in SPLITS
    }
    return make_dataset(
        name,
        splits,
        batch_size,
        eval_batch_size,
        input_shape=(source_len,),
        info={
            **tokenizer.info(),
            "source_len": source_len,
            "target_len": target_len,
            "truncated_fraction": cut,
            "unknown_fraction": unknown,
            **(info or {}),
        },
    )


def _read_pairs(source: Sequence[dict], source_key: str, target_key: str, limit: int | None) -> list:
    count = len(source) if limit is None else min(limit, len(source))
    records = [source[i] for i in range(count)]  # a Translation feature: one text per language
    return [(as_text(r[source_key]), as_text(r[target_key])) for r in records]


def load_tfds(
    name: str,
    data_dir: str,
    source_key: str,
    target_key: str,
    split_names: dict[str, str],
    max_examples: int | None,
    source_len: int,
    target_len: int,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """A TFDS translation dataset with its own train/validation/test splits, character level;
    pairs longer than the lengths are cut (``info.truncated_fraction`` says how many)."""
    from research.data.tfds_source import open_tfds

    data_dir = os.path.expanduser(data_dir)
    if max_examples is not None and (isinstance(max_examples, bool) or max_examples < 1):
        raise ConfigError(f"data.max_examples must be a positive integer or null, got {max_examples!r}")
    _, sources = open_tfds(name, data_dir, split_names)
    pairs = {s: _read_pairs(sources[s], source_key, target_key, max_examples) for s in SPLITS}
    return pairs_dataset(
        name, pairs, source_len, target_len, batch_size, eval_batch_size, truncate=True,
        info={"source_language": source_key, "target_language": target_key},
    )  # fmt: skip
