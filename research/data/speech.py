"""What speech sources share: transcripts as characters, audio padded to a maximum, log-mels on device.

A source (synthesised spoken digits, TFDS speech_commands) hands over each split's clips
as int16 arrays at ``sample_rate`` with their transcripts; here they become the fields a CTC
task reads: ``audio`` (N, max_samples) int16, zero-padded, ``audio_length`` (N,),
``label`` (N, max_label) int32 character ids (0 is CTC's blank, so characters count from 1;
0 also pads) and ``label_length`` (N,). The transform turns ``audio`` into ``features``
(B, frames, n_mels) log-mels and ``feature_mask`` (B, frames) on device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.data.arrays import ArraySplit, check_batch_sizes, check_not_empty
from research.data.base import Batch, Dataset, Split, Transform
from research.data.spectrogram import (
    INT16_SCALE,
    Features,
    log_mel,
    mel_filterbank,
    spec_augment,
    standardize,
)
from research.errors import ConfigError, DataError

BLANK = 0  # CTC's blank id; character i of the alphabet is id i + 1


def encode(text: str, alphabet: str, where: str) -> np.ndarray:
    """Character ids (1-based) of ``text``; a character outside ``alphabet`` is one line."""
    unknown = sorted(set(text) - set(alphabet))
    if unknown:
        raise DataError(f"{where}: transcript {text!r} has characters {unknown} outside data.alphabet")
    return np.asarray([alphabet.index(c) + 1 for c in text], np.int32)


def decode(ids: Sequence[int], alphabet: str) -> str:
    """The text of 1-based character ids (blanks and padding, 0, dropped)."""
    return "".join(alphabet[i - 1] for i in ids if i != BLANK)


def pad_audio(clips: Sequence[np.ndarray], max_samples: int, max_seconds: float, where: str) -> np.ndarray:
    """(N, max_samples) int16 of 1-D int16 ``clips``; a clip longer than that is one line."""
    out = np.zeros((len(clips), max_samples), np.int16)
    for i, clip in enumerate(clips):
        if len(clip) > max_samples:
            seconds = len(clip) / max_samples * max_seconds
            raise DataError(
                f"{where}: clip {i} lasts {seconds:.3f} s, longer than data.max_seconds={max_seconds}: "
                "raise data.max_seconds (or shorten the clips)"
            )
        out[i, : len(clip)] = clip
    return out


def split_arrays(
    clips: Sequence[np.ndarray],
    texts: Sequence[str],
    alphabet: str,
    max_samples: int,
    max_seconds: float,
    where: str,
    width: int | None = None,
) -> dict[str, np.ndarray]:
    """The fields of one split (see the module docstring); labels padded to ``width`` (None: the
    longest here)."""
    labels = [encode(t, alphabet, where) for t in texts]
    width = width or max(1, max((len(x) for x in labels), default=1))
    label = np.zeros((len(labels), width), np.int32)
    for i, x in enumerate(labels):
        label[i, : len(x)] = x
    return {
        "audio": pad_audio(clips, max_samples, max_seconds, where),
        "audio_length": np.asarray([len(c) for c in clips], np.int32),
        "label": label,
        "label_length": np.asarray([len(x) for x in labels], np.int32),
    }


def pad_labels(splits: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Every split's labels padded to one width, so train and eval batches agree."""
    width = max(s["label"].shape[1] for s in splits.values())
    return {
        name: {**s, "label": np.pad(s["label"], ((0, 0), (0, width - s["label"].shape[1])))}
        for name, s in splits.items()
    }


def make_features(sample_rate: int, config: Mapping[str, Any]) -> Features:
    """``data.features`` (window_ms, hop_ms, n_fft, n_mels, fmin, fmax, log_floor, SpecAugment) in samples."""
    config = dict(config)
    window = round(config.pop("window_ms") * sample_rate / 1000)
    hop = round(config.pop("hop_ms") * sample_rate / 1000)
    fmax = config.pop("fmax", None) or sample_rate / 2
    try:
        return Features(sample_rate=sample_rate, window=window, hop=hop, fmax=fmax, **config)
    except TypeError as e:
        raise ConfigError(f"data.features: {e}") from None


def make_transform(features: Features) -> Transform:
    """``transform(rng, batch, train)``: int16 ``audio`` -> standardised ``features`` and ``feature_mask``."""
    filterbank = mel_filterbank(
        features.sample_rate, features.n_fft, features.n_mels, features.fmin, features.fmax
    )

    def transform(rng: jax.Array, batch: Batch, train: bool) -> Batch:
        x = log_mel(batch["audio"].astype(jnp.float32) / INT16_SCALE, features, filterbank)
        lengths = jnp.maximum(1, (batch["audio_length"] - features.window) // features.hop + 1)
        mask = jnp.arange(x.shape[1])[None] < lengths[:, None]
        x = standardize(x, mask)
        if train:
            x = spec_augment(rng, x, features)
        return {**batch, "features": x, "feature_mask": mask}

    return transform


def make_speech_dataset(
    name: str,
    splits: dict[str, dict[str, np.ndarray]],
    alphabet: str,
    features: Features,
    batch_size: int,
    eval_batch_size: int,
    info: dict[str, Any],
    train: Split | None = None,
) -> Dataset:
    """A ``Dataset`` of speech splits: ``input_shape`` (frames, n_mels), the alphabet in ``info``.

    ``train``, when given, is a streamed training split (its labels as wide as ``splits``' own).
    """
    if len(set(alphabet)) != len(alphabet) or not alphabet:
        raise ConfigError(f"data.alphabet={alphabet!r} must list distinct characters")
    max_samples = next(iter(splits.values()))["audio"].shape[1]
    if max_samples < features.window:
        raise ConfigError(
            f"data.max_seconds holds {max_samples} samples, fewer than one window ({features.window})"
        )
    check_batch_sizes(batch_size, eval_batch_size)
    held: dict[str, Split] = {split: ArraySplit(arrays) for split, arrays in pad_labels(splits).items()}
    held = {**held, "train": train} if train is not None else held
    check_not_empty(name, {split: held[split].num_examples for split in held})
    num_train = held["train"].num_examples
    if batch_size > num_train:
        raise ConfigError(f"data.batch_size={batch_size} exceeds the {num_train} training examples of {name}")
    return Dataset(
        name=name,
        input_shape=(int(features.num_frames(max_samples)), features.n_mels),
        num_classes=None,
        splits=held,
        transform=make_transform(features),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        info={**info, "alphabet": alphabet, "sample_rate": features.sample_rate},
    )
