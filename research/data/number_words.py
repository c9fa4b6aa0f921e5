"""GENERATED data: numbers and dates written in words in several languages, to their normal form.

No parallel corpus ships in a package here, so this one is made with two maintained libraries:
``num2words`` spells numbers ("neuf cent quatre-vingt-sept mille six cent cinquante-quatre",
"neunhundertsiebenundachtzigtausend...") and ``babel`` gives each locale's long date format
and month names ("23. März 2021", "23 de marzo de 2021"), whose day and year are then spelt
out too ("dreiundzwanzigste März zweitausendeinundzwanzig"; English days as ordinals,
"March twenty-third, twenty twenty-one"). The normal forms are digits ("987654") and ISO dates
("2021-03-23"). ``direction: to_normal`` reads the words and writes the normal form;
``to_words`` reads "<language>: <normal form>" and writes the words.

Held out by value: every number and every day belongs to one split (drawn once with
``seed``, shares ``held_out`` each for val and test), so no test value is seen in training,
in any language. Each example draws a kind, a language and a value of its split's pool
(numbers: a digit count uniformly, then a number of that many digits). The pairs are made
once per (settings, library versions) and kept in the data dir as
``number_words/<digest>.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from research.data.arrays import SPLITS
from research.data.base import Dataset
from research.data.data_dir import check_writable
from research.data.text_pairs import pairs_dataset
from research.errors import ConfigError

log = logging.getLogger(__name__)

FOLDER = "number_words"
KINDS = ("cardinal", "date")
DIRECTIONS = ("to_normal", "to_words")
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}  # each split's own generator: default_rng([seed, n])
OWNER_STREAM = 3  # the generator that deals the values out to the splits
ORDINAL_DAYS = ("en", "de")  # languages whose long dates say the day as an ordinal (others only the 1st)
NUMERAL = re.compile(r"(\d+)\.?")  # a day or year in a formatted date, with German's ordinal dot
FIRST_YEAR_DIGITS = 1000  # a numeral this large in a date is its year


@dataclasses.dataclass(frozen=True)
class Corpus:
    """What the pairs are made of (everything the cache digest covers, with the library versions)."""

    languages: tuple[str, ...]
    kinds: tuple[str, ...]
    max_digits: int
    first_year: int
    last_year: int
    direction: str
    sizes: tuple[int, int, int]  # train, val, test examples
    held_out: float
    seed: int

    def __post_init__(self) -> None:
        from num2words import CONVERTER_CLASSES

        unknown = [lang for lang in self.languages if lang not in CONVERTER_CLASSES]
        if not self.languages or unknown:
            raise ConfigError(f"data.languages {unknown or '[]'}: choose from {sorted(CONVERTER_CLASSES)}")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ConfigError(f"data.kinds={list(self.kinds)} must be a non-empty subset of {list(KINDS)}")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"data.direction={self.direction!r} is not one of: {', '.join(DIRECTIONS)}")
        if not 1 <= self.max_digits <= 9 or not FIRST_YEAR_DIGITS <= self.first_year <= self.last_year:
            raise ConfigError(
                "data.max_digits must be in [1, 9] and 1000 <= data.first_year <= data.last_year"
            )
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.sizes):
            raise ConfigError(f"data.train_size, val_size and test_size must be positive, got {self.sizes}")
        if not 0.0 < self.held_out < 0.5:
            raise ConfigError(f"data.held_out={self.held_out} must be in (0, 0.5)")


def spell_date(day: datetime.date, lang: str) -> str:
    """The locale's long date with its day and year in words."""
    from babel.dates import format_date
    from num2words import num2words

    def words(match: re.Match) -> str:
        n = int(match.group(1))
        if n >= FIRST_YEAR_DIGITS:
            return num2words(n, lang=lang, to="year")
        return num2words(n, lang=lang, to="ordinal" if lang in ORDINAL_DAYS or n == 1 else "cardinal")

    return NUMERAL.sub(words, format_date(day, format="long", locale=lang))


def render(kind: str, value: int, lang: str) -> tuple[str, str]:
    """(words, normal form) of a number, or of the day ``value`` (a proleptic Gregorian ordinal)."""
    from num2words import num2words

    if kind == "cardinal":
        return num2words(value, lang=lang), str(value)
    day = datetime.date.fromordinal(value)
    return spell_date(day, lang), day.isoformat()


def pools(corpus: Corpus) -> dict[str, dict[str, list[np.ndarray]]]:
    """{split: {kind: value arrays}}: each value dealt to one split; numbers grouped by digit count."""
    rng = np.random.default_rng([corpus.seed, OWNER_STREAM])
    first = datetime.date(corpus.first_year, 1, 1).toordinal()
    last = datetime.date(corpus.last_year, 12, 31).toordinal()
    values = {"cardinal": np.arange(10**corpus.max_digits), "date": np.arange(first, last + 1)}
    out: dict[str, dict[str, list[np.ndarray]]] = {split: {} for split in SPLITS}
    for kind in corpus.kinds:
        draw = rng.random(len(values[kind]))
        owner = np.where(draw < corpus.held_out, 2, np.where(draw < 2 * corpus.held_out, 1, 0))
        for split, n in SPLIT_STREAMS.items():
            own = values[kind][owner == n]
            if kind == "cardinal":
                digits = np.array([len(str(v)) for v in own]) if len(own) < 100 else _digit_counts(own)
                out[split][kind] = [own[digits == d] for d in range(1, corpus.max_digits + 1)]
            else:
                out[split][kind] = [own]
    return out


def _digit_counts(values: np.ndarray) -> np.ndarray:
    return np.maximum(np.floor(np.log10(np.maximum(values, 1))).astype(int) + 1, 1)


def draw_pairs(corpus: Corpus, split: str, pool: dict[str, list[np.ndarray]]) -> list[tuple[str, str]]:
    """``sizes[split]`` (source, target) pairs of values from the split's own pool."""
    rng = np.random.default_rng([corpus.seed, SPLIT_STREAMS[split]])
    size = corpus.sizes[SPLIT_STREAMS[split]]
    pairs = []
    while len(pairs) < size:
        kind = corpus.kinds[rng.integers(len(corpus.kinds))]
        lang = corpus.languages[rng.integers(len(corpus.languages))]
        group = pool[kind][rng.integers(len(pool[kind]))]  # a digit count (numbers) or all days
        if not len(group):
            continue
        words, normal = render(kind, int(group[rng.integers(len(group))]), lang)
        pairs.append((words, normal) if corpus.direction == "to_normal" else (f"{lang}: {normal}", words))
    return pairs


def digest(corpus: Corpus) -> str:
    """A name for the pairs of ``corpus``: changes with any setting or either library's version."""
    versions = {lib: metadata.version(lib) for lib in ("num2words", "babel")}
    blob = json.dumps({"corpus": dataclasses.asdict(corpus), "versions": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_pairs(data_dir: str, corpus: Corpus) -> dict[str, list[tuple[str, str]]]:
    """Every split's pairs: read from the data dir's cache, made and written there on a miss."""
    path = Path(data_dir) / FOLDER / f"{digest(corpus)}.json"
    if path.is_file():
        return {split: [tuple(p) for p in pairs] for split, pairs in json.loads(path.read_text()).items()}
    log.info("Writing numbers and dates in words (once) into %s", path)
    split_pools = pools(corpus)
    pairs = {split: draw_pairs(corpus, split, split_pools[split]) for split in SPLITS}
    check_writable(str(path.parent), "the generated number words")
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".json", delete=False) as f:
        json.dump(pairs, f, ensure_ascii=False)
    os.replace(f.name, path)  # whole or absent: a racing run writes the same bytes
    return pairs


def load(
    data_dir: str,
    languages: list[str],
    kinds: list[str],
    max_digits: int,
    first_year: int,
    last_year: int,
    direction: str,
    train_size: int,
    val_size: int,
    test_size: int,
    held_out: float,
    seed: int,
    source_len: int,
    target_len: int,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """``source`` (source_len,) and ``target`` (target_len + 2,) character ids (``text_pairs``)."""
    corpus = Corpus(
        tuple(languages), tuple(kinds), max_digits, first_year, last_year, direction,
        (train_size, val_size, test_size), held_out, seed,
    )  # fmt: skip
    pairs = cached_pairs(os.path.expanduser(data_dir), corpus)
    info: dict[str, Any] = {
        "generated": True,
        "corpus": dataclasses.asdict(corpus),
        "examples": pairs["val"][:4],
    }
    return pairs_dataset(
        FOLDER, pairs, source_len, target_len, batch_size, eval_batch_size, truncate=False, info=info
    )
