"""Spoken digit strings synthesised with espeak-ng: SYNTHETIC speech, no recording of a person.

Each utterance is ``min_digits`` to ``max_digits`` random digits read as words ("three seven
one") by one of a split's voices (an espeak-ng voice and variant, e.g. ``en-us+f3``) at a
random speed (words per minute) and pitch (0-99). Each split has its own voices, so the test
split measures voices never heard in training. espeak-ng writes 22,050 Hz WAV files (read
with ``wave``), resampled here to ``sample_rate``. The transcript is the words; the task's
targets are their characters.

Utterances are synthesised once per settings, in ``workers`` parallel espeak-ng processes, and
kept in the data dir as ``spoken_digits/<digest>.npz`` (clips unpadded, so ``max_seconds`` can
change without synthesising again); the digest covers the settings and espeak-ng's version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
import wave
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from research.data.arrays import SPLITS
from research.data.base import Dataset
from research.data.data_dir import check_writable
from research.data.speech import make_features, make_speech_dataset, split_arrays
from research.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FOLDER = "spoken_digits"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ESPEAK = "espeak-ng"
MISSING = "espeak-ng is not installed: `apt-get install espeak-ng` (it speaks the synthetic digits)"
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}  # each split's own generator: default_rng([seed, n])


@dataclasses.dataclass(frozen=True)
class Speakers:
    """Everything the cache digest covers: who says what, how fast, at which pitch and rate."""

    voices: Mapping[str, tuple[str, ...]]
    counts: Mapping[str, int]
    min_digits: int
    max_digits: int
    speed: tuple[int, int]
    pitch: tuple[int, int]
    sample_rate: int
    seed: int

    def __post_init__(self) -> None:
        for split in SPLITS:
            if not self.voices.get(split):
                raise ConfigError(f"data.voices.{split} must list at least one espeak-ng voice")
            if self.counts[split] < 1:
                raise ConfigError(f"data: the {split} split needs at least one utterance")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(
                f"data: need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}"
            )
        if not 80 <= self.speed[0] <= self.speed[1] or not 0 <= self.pitch[0] <= self.pitch[1] <= 99:
            raise ConfigError(
                f"data.speed={list(self.speed)} (>= 80 wpm) and data.pitch={list(self.pitch)} (0-99)"
            )
        if self.sample_rate < 1000:
            raise ConfigError(f"data.sample_rate={self.sample_rate} must be >= 1000 Hz")


@dataclasses.dataclass(frozen=True)
class Utterance:
    voice: str
    speed: int
    pitch: int
    text: str


def script(speakers: Speakers, split: str) -> list[Utterance]:
    """What the ``split`` says, drawn from its own stream of ``speakers.seed``."""
    rng = np.random.default_rng([speakers.seed, SPLIT_STREAMS[split]])
    voices = speakers.voices[split]
    out = []
    for _ in range(speakers.counts[split]):
        digits = rng.integers(0, 10, int(rng.integers(speakers.min_digits, speakers.max_digits + 1)))
        out.append(
            Utterance(
                voice=voices[int(rng.integers(len(voices)))],
                speed=int(rng.integers(speakers.speed[0], speakers.speed[1] + 1)),
                pitch=int(rng.integers(speakers.pitch[0], speakers.pitch[1] + 1)),
                text=" ".join(WORDS[d] for d in digits),
            )
        )
    return out


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """(int16 mono samples, rate) of a 16-bit PCM WAV file."""
    with wave.open(path, "rb") as f:
        if f.getsampwidth() != 2 or f.getnchannels() != 1:
            raise DataError(f"{path}: expected 16-bit mono audio from espeak-ng")
        return np.frombuffer(f.readframes(f.getnframes()), np.int16), f.getframerate()


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """int16 ``audio`` from ``rate`` to ``target`` Hz (polyphase, anti-aliased)."""
    if rate == target:
        return audio
    from scipy.signal import resample_poly  # only synthesis needs it

    g = math.gcd(rate, target)
    out = resample_poly(audio.astype(np.float32), target // g, rate // g)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def speak(utterance: Utterance, sample_rate: int, folder: str) -> np.ndarray:
    """One utterance through espeak-ng, at ``sample_rate``."""
    fd, path = tempfile.mkstemp(suffix=".wav", dir=folder)
    os.close(fd)
    try:
        cmd = [
            ESPEAK,
            "-v",
            utterance.voice,
            "-s",
            str(utterance.speed),
            "-p",
            str(utterance.pitch),
            "-w",
            path,
        ]
        proc = subprocess.run([*cmd, utterance.text], capture_output=True, text=True)
        if proc.returncode != 0 or os.path.getsize(path) == 0:
            reason = (proc.stderr or proc.stdout).strip().splitlines()[:1]
            raise DataError(
                f"espeak-ng could not speak with voice {utterance.voice!r} "
                f"({'; '.join(reason) or 'no audio'}): "
                "fix data.voices (`espeak-ng --voices=en` lists them; variants: `--voices=variant`)"
            )
        audio, rate = read_wav(path)
    finally:
        os.remove(path)
    return resample(audio, rate, sample_rate)


def synthesize(utterances: Sequence[Utterance], sample_rate: int, workers: int) -> list[np.ndarray]:
    """Every utterance's clip, ``workers`` espeak-ng processes at a time."""
    if shutil.which(ESPEAK) is None:
        raise DataError(MISSING)
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda u: speak(u, sample_rate, folder), utterances))


def espeak_version() -> str:
    if shutil.which(ESPEAK) is None:
        raise DataError(MISSING)
    return subprocess.run([ESPEAK, "--version"], capture_output=True, text=True).stdout.strip()


def digest(speakers: Speakers) -> str:
    """A name for these settings' utterances: changes with any of them or with espeak-ng's version."""
    settings = dataclasses.asdict(speakers) | {"espeak": espeak_version()}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:16]


def cached(data_dir: str, speakers: Speakers, workers: int) -> dict[str, dict[str, np.ndarray]]:
    """Per split: ``clips`` (all samples end to end), ``lengths`` and ``texts``; synthesised on a miss."""
    path = Path(data_dir) / FOLDER / f"{digest(speakers)}.npz"
    keys = ("clips", "lengths", "texts", "voices", "speeds", "pitches")
    if path.is_file():
        with np.load(path) as stored:
            return {split: {k: stored[f"{split}/{k}"] for k in keys} for split in SPLITS}
    check_writable(str(path.parent), "the synthesised speech")
    start, splits = time.perf_counter(), {}
    for split in SPLITS:
        utterances = script(speakers, split)
        clips = synthesize(utterances, speakers.sample_rate, workers)
        splits[split] = {
            "clips": np.concatenate(clips),
            "lengths": np.asarray([len(c) for c in clips], np.int64),
            "texts": np.asarray([u.text for u in utterances]),
            "voices": np.asarray([u.voice for u in utterances]),
            "speeds": np.asarray([u.speed for u in utterances], np.int32),
            "pitches": np.asarray([u.pitch for u in utterances], np.int32),
        }
    log.info(
        "Synthesised %d utterances in %.1f s into %s",
        sum(speakers.counts.values()),
        time.perf_counter() - start,
        path,
    )
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez(f, **{f"{s}/{k}": v for s, arrays in splits.items() for k, v in arrays.items()})
    os.replace(f.name, path)  # whole or absent: a racing run writes the same bytes
    return splits


def clips_of(split: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return np.split(split["clips"], np.cumsum(split["lengths"])[:-1])


def load(
    data_dir: str,
    voices: Mapping[str, Sequence[str]],
    num_utterances: int,
    num_eval_utterances: int,
    min_digits: int,
    max_digits: int,
    speed: Sequence[int],
    pitch: Sequence[int],
    sample_rate: int,
    max_seconds: float,
    seed: int,
    workers: int,
    alphabet: str,
    features: Mapping[str, Any],
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """Synthetic spoken digits as speech fields (research/data/speech.py), held-out voices in val and test."""
    speakers = Speakers(
        voices={split: tuple(voices.get(split) or ()) for split in SPLITS},
        counts={"train": num_utterances, "val": num_eval_utterances, "test": num_eval_utterances},
        min_digits=min_digits,
        max_digits=max_digits,
        speed=(int(speed[0]), int(speed[1])),
        pitch=(int(pitch[0]), int(pitch[1])),
        sample_rate=sample_rate,
        seed=seed,
    )
    if max_seconds <= 0:
        raise ConfigError(f"data.max_seconds={max_seconds} must be > 0")
    max_samples = round(max_seconds * sample_rate)
    stored = cached(os.path.expanduser(data_dir), speakers, workers or os.cpu_count() or 1)
    splits = {
        split: split_arrays(
            clips_of(stored[split]), list(stored[split]["texts"]), alphabet, max_samples, max_seconds,
            f"{FOLDER} {split}",
        )
        for split in SPLITS
    }  # fmt: skip
    info = {"synthetic": True, "voices": {s: list(v) for s, v in speakers.voices.items()}}
    return make_speech_dataset(
        FOLDER, splits, alphabet, make_features(sample_rate, features), batch_size, eval_batch_size, info
    )
