"""Real speech: TFDS ``speech_commands`` (Warden 2018), one-second clips of 35 words, 10 of them labelled.

The transcript of a clip is its label's word ("yes", "down", ...); ``_silence_`` clips have an
empty transcript (CTC then learns to emit only blanks); ``_unknown_`` clips (any of the other
25 words, unnamed) have no transcript and are left out. TFDS's splits are used as they are
(train, validation, test), each capped at ``max_examples`` clips (chosen by ``split_seed``),
read through ``tfds.data_source`` and resampled to ``sample_rate`` on the host; with
``in_memory`` false the training records stream through grain instead of being held in memory.

TFDS downloads it (2.4 GB) and its Audio feature needs TensorFlow, to build and to read:
``pip install tensorflow-cpu`` (the ``prepare`` extra), then
``python -m research.data.prepare speech_commands`` on a machine with internet.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
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
WIDTH = max(len(t) for t in TRANSCRIPTS.values())  # label slots of every split, streamed or not
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
    source: Sequence[dict], split: str, max_examples: int | None, seed: int
) -> tuple[list[np.ndarray], list[str]]:
    """(16 kHz int16 clips, transcripts) of up to ``max_examples`` labelled records."""
    order = np.random.default_rng([seed, list(SPLITS).index(split)]).permutation(len(source))
    clips, texts = [], []
    for start in range(0, len(order), CHUNK):
        for record in read_records(source, order[start : start + CHUNK]):
            text = TRANSCRIPTS.get(LABELS[int(record["label"])])
            if text is not None:
                clips.append(np.asarray(record["audio"]).astype(np.int16))
                texts.append(text)
            if max_examples and len(clips) >= max_examples:
                return clips, texts
    return clips, texts


class StreamedClips:
    """The training records ``indices`` read as they are needed, through grain: a ``Split``.

    Record ``i`` becomes one example's speech fields, or None for an ``_unknown_`` clip, which
    the iterator skips; so ``num_examples`` (what an epoch counts) includes those.
    """

    in_memory = False

    def __init__(self, source: Sequence[dict], indices: np.ndarray, fields: Callable[..., dict]):
        self.source, self.indices, self.fields = source, indices, fields

    @property
    def num_examples(self) -> int:
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, np.ndarray] | None:
        record = self.source[int(self.indices[i])]
        text = TRANSCRIPTS.get(LABELS[int(record["label"])])
        if text is None:
            return None
        return {
            k: v[0] for k, v in self.fields([np.asarray(record["audio"]).astype(np.int16)], [text]).items()
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Every labelled record, stacked (reads the whole split: for inspection, not training)."""
        examples = [e for e in (self[i] for i in range(len(self))) if e is not None]
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}

    def iterator(self, batch_size: int, seed: int, shard_index: int, shard_count: int) -> Any:
        """Endless shuffled batches of this process's shard; ``get_state``/``set_state`` resume it."""
        import grain  # only streaming runs pay for importing grain

        dataset = grain.MapDataset.source(self)[shard_index::shard_count].shuffle(seed).repeat()
        labelled = dataset.to_iter_dataset().filter(lambda e: e is not None)
        return iter(labelled.batch(batch_size, drop_remainder=True))


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
    in_memory: bool = True,
) -> Dataset:
    """speech_commands as speech fields (research/data/speech.py): words as character transcripts.

    ``in_memory`` false streams the training records through grain (``max_examples`` of them,
    ``_unknown_`` ones included and skipped); val and test are always read into memory.
    """
    if max_seconds <= 0 or (max_examples is not None and max_examples < 1):
        raise ConfigError(f"data.max_seconds={max_seconds} must be > 0, data.max_examples >= 1 or null")
    sources = open_sources(os.path.expanduser(data_dir))
    max_samples = round(max_seconds * sample_rate)

    def fields(clips: list[np.ndarray], texts: list[str], split: str = "train") -> dict[str, np.ndarray]:
        clips = [resample(c, RATE, sample_rate) for c in clips]
        return split_arrays(clips, texts, alphabet, max_samples, max_seconds, f"{NAME} {split}", WIDTH)

    splits = {
        split: fields(*read_split(sources[split], split, max_examples, split_seed), split)
        for split in SPLITS
        if in_memory or split != "train"
    }
    train = None
    if not in_memory:
        order = np.random.default_rng([split_seed, 0]).permutation(len(sources["train"]))[:max_examples]
        train = StreamedClips(sources["train"], order, fields)
    features = make_features(sample_rate, features)
    return make_speech_dataset(NAME, splits, alphabet, features, batch_size, eval_batch_size, {}, train)
