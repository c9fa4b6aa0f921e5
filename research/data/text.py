"""Tokenizers a sampler can rebuild from ``Dataset.info`` alone.

``CharTokenizer`` is the character-level vocabulary of the LM corpora: id 0 is the
unknown character, then every character of the training text in code-point order,
so the same text always gives the same ids. ``from_info`` rebuilds the tokenizer of
any text dataset (characters from ``info["vocab"]``, words from the HF tokenizer file).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

UNK = "\ufffd"  # what an unknown character decodes to (Unicode's replacement character)
UNK_ID = 0


class CharTokenizer:
    """Characters <-> int32 ids; characters outside the vocabulary map to ``UNK_ID``."""

    kind = "char"

    def __init__(self, itos: Sequence[str]):
        if not itos or itos[UNK_ID] != UNK or any(len(c) != 1 for c in itos):
            raise ValueError("itos must be single characters, the unknown one first")
        self.itos = list(itos)
        self.unk_id = UNK_ID
        self._codes = np.array([ord(c) for c in self.itos[1:]], np.uint32)  # sorted by construction

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """The vocabulary of ``text`` (the training text only: other splits may hold unknowns)."""
        return cls([UNK, *sorted(set(text) - {UNK})])

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> np.ndarray:
        """(len(text),) int32 ids, vectorised: ~0.1 s for the 5 MB of Shakespeare."""
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        position = np.searchsorted(self._codes, codes)
        if not len(self._codes):
            return np.full(len(codes), self.unk_id, np.int32)
        found = self._codes[np.minimum(position, len(self._codes) - 1)] == codes
        return np.where(found, position + 1, self.unk_id).astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return "".join(self.itos[int(i)] for i in np.asarray(ids).reshape(-1))

    def info(self) -> dict[str, Any]:
        """What ``from_info`` needs, for ``Dataset.info``."""
        return {"tokenizer": self.kind, "vocab": self.itos, "vocab_size": self.vocab_size, "unk_id": UNK_ID}


def as_text(value: str | bytes) -> str:
    """A TFDS ``Text`` value as str: array_record sources return bytes, the test mock str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def from_info(info: dict[str, Any]) -> Any:
    """The tokenizer of a text dataset: a ``CharTokenizer`` or an HF ``tokenizers.Tokenizer``.

    Both have ``encode``; an HF tokenizer's returns an ``Encoding`` (``.ids``, ``.attention_mask``).
    """
    if info.get("tokenizer") == CharTokenizer.kind:
        return CharTokenizer(info["vocab"])
    if info.get("tokenizer") == "word":
        from tokenizers import Tokenizer

        return Tokenizer.from_str(info["tokenizer_json"])
    raise ValueError(f"no tokenizer in this dataset's info (tokenizer={info.get('tokenizer')!r})")
