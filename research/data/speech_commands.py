"""Real speech: TFDS ``speech_commands`` (Warden 2018), one-second clips of 35 words, 10 of them labelled.

The transcript of a clip is its label's word ("yes", "down", ...); ``_silence_`` clips have an
empty transcript (CTC then learns to emit only blanks); ``_unknown_`` clips (any of the other
25 words, unnamed) have no transcript and are left out. TFDS's splits are used as they are
(train, validation, test), each capped at ``max_examples`` clips (chosen by ``split_seed``),
read through ``tfds.data_source`` and resampled to ``sample_rate`` on the host.

TFDS downloads it (2.4 GB) and its Audio feature needs TensorFlow, to build and to read:
``pip install tensorflow-cpu`` (the ``prepare`` extra), then
``python -m research.data.prepare speech_commands`` on a machine with internet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from research.data import tfds_source
from research.data.base import Dataset
from research.data.pets import read_records
from research.data.speech import make_features, make_speech_dataset, split_arrays
from research.data.spoken_digits import resample
from research.errors import ConfigError, DataError

NAME = "speech_commands"
RATE = 16000  # TFDS stores the clips at 16 kHz
LABELS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "_silence_", "_unknown_"]
TRANSCRIPTS = {**{w: w for w in LABELS[:10]}, "_silence_": ""}  # _unknown_: no transcript, left out
SPLITS = {"train": "train", "val": "validation", "test": "test"}
CHUNK = 1024  # records read at once: the whole train split would not fit in memory


def open_sources(data_dir: str) -> dict[str, Sequence[dict]]:
    """Random-access sources of the three splits, or one line on what is missing."""
    try:
        _, sources = tfds_source.open_tfds(NAME, data_dir, SPLITS)
    except ModuleNotFoundError as e:
        raise DataError(
            f"reading {NAME} needs {e.name} (TFDS's Audio feature): "
            "`pip install tensorflow-cpu` (the prepare extra)"
        ) from None
    return sources


def read_split(
    source: Sequence[dict], split: str, max_examples: int | None, seed: int, sample_rate: int
) -> tuple[list[np.ndarray], list[str]]:
    """(clips at ``sample_rate``, transcripts) of up to ``max_examples`` labelled records."""
    order = np.random.default_rng([seed, list(SPLITS).index(split)]).permutation(len(source))
    clips, texts = [], []
    for start in range(0, len(order), CHUNK):
        for record in read_records(source, order[start : start + CHUNK]):
            text = TRANSCRIPTS.get(LABELS[int(record["label"])])
            if text is not None:
                clips.append(resample(np.asarray(record["audio"]).astype(np.int16), RATE, sample_rate))
                texts.append(text)
            if max_examples and len(clips) >= max_examples:
                return clips, texts
    return clips, texts


def load(
    data_dir: str,
    max_examples: int | None,
    split_seed: int,
    sample_rate: int,
    max_seconds: float,
    alphabet: str,
    features: Mapping[str, Any],
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """speech_commands as speech fields (research/data/speech.py): words as character transcripts."""
    if max_seconds <= 0 or (max_examples is not None and max_examples < 1):
        raise ConfigError(f"data.max_seconds={max_seconds} must be > 0, data.max_examples >= 1 or null")
    sources = open_sources(os.path.expanduser(data_dir))
    max_samples = round(max_seconds * sample_rate)
    splits = {}
    for split in SPLITS:
        clips, texts = read_split(sources[split], split, max_examples, split_seed, sample_rate)
        splits[split] = split_arrays(clips, texts, alphabet, max_samples, max_seconds, f"{NAME} {split}")
    return make_speech_dataset(
        NAME, splits, alphabet, make_features(sample_rate, features), batch_size, eval_batch_size, {}
    )
