"""Speech recognition with CTC: the loss against a hand sum over alignments, decoding, error rates,
log-mels against scipy, the too-long-audio error, and a tiny espeak-ng synthesis round trip."""

from __future__ import annotations

import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from research.data import spectrogram, speech, spoken_digits
from research.errors import DataError
from research.tasks import ctc_decoding
from research.tasks.speech_recognition import ctc_per_char
from tests import needs
from tests.conftest import ROOT, run_train

BLANK = 0


def alignments_sum(probs: np.ndarray, label: list[int]) -> float:
    """P(label | x) by brute force: every path of the (T, V) frames whose collapse is ``label``."""
    frames, symbols = probs.shape
    total = 0.0
    for path in itertools.product(range(symbols), repeat=frames):
        if ctc_decoding.collapse(path, BLANK) == label:
            total += float(np.prod(probs[np.arange(frames), path]))
    return total


@pytest.mark.parametrize("label", [[1, 2], [1, 1], [2, 1, 2]])
def test_ctc_loss_is_minus_log_of_the_summed_alignments(label: list[int]) -> None:
    """T=4 frames, blank + 2 symbols: optax's CTC (padded as the task pads it) equals the hand sum."""
    logits = jax.random.normal(jax.random.PRNGKey(len(label)), (4, 3))
    probs = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    expected = -np.log(alignments_sum(probs, label))
    # Two padded frames and a padded label slot after the real ones: they must change nothing.
    padded_logits = jnp.concatenate([logits, jnp.full((2, 3), 5.0)])[None]
    mask = jnp.asarray([[1, 1, 1, 1, 0, 0]])
    labels = jnp.asarray([label + [0] * (4 - len(label))])
    per_char = ctc_per_char(padded_logits, mask, labels, jnp.asarray([len(label)]))
    np.testing.assert_allclose(float(per_char[0]) * len(label), expected, rtol=1e-5)


def test_greedy_collapses_repeats_and_drops_blanks() -> None:
    alphabet = "ab"
    path = [1, 1, BLANK, 1, 2, BLANK]  # "aa-ab-"
    assert speech.decode(ctc_decoding.collapse(path, BLANK), alphabet) == "aab"
    log_probs = np.log(np.eye(3)[path + [2, 2]] * 0.9 + 0.05)
    assert speech.decode(ctc_decoding.greedy(log_probs, 6, BLANK), alphabet) == "aab"  # frames past 6 unread


def test_beam_search_finds_the_most_probable_labelling() -> None:
    """Without pruning and with a wide beam, prefix beam search returns the brute-force best labelling,
    which here differs from greedy's (several paths sum above the single best path)."""
    probs = np.asarray([[0.6, 0.4], [0.6, 0.4]])  # blank, "a": the best path "--" (0.36), but "a" has 0.64
    labellings: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(2), repeat=2):
        key = tuple(ctc_decoding.collapse(path, BLANK))
        labellings[key] = labellings.get(key, 0.0) + np.prod(probs[np.arange(2), path])
    best = list(max(labellings, key=labellings.get))
    log_probs = np.log(probs)
    assert ctc_decoding.beam_search(log_probs, 2, BLANK, 50, -np.inf) == best == [1]
    assert ctc_decoding.greedy(log_probs, 2, BLANK) == []


def test_error_rates_by_hand() -> None:
    assert ctc_decoding.edit_distance("kitten", "sitting") == 3
    # "three seven one" -> "tree seven one one": 1 deletion + 4 insertions of 15 characters;
    # 1 substitution + 1 insertion of 3 words. "two" read exactly: 0 of 3 and 0 of 1.
    rates = ctc_decoding.error_rates(["three seven one", "two"], ["tree seven one one", "two"])
    assert rates["cer"] == pytest.approx(5 / 18)
    assert rates["wer"] == pytest.approx(2 / 4)


def test_log_mel_matches_a_scipy_reference() -> None:
    rate = 8000
    features = speech.make_features(
        rate, {"window_ms": 25, "hop_ms": 10, "n_fft": 256, "n_mels": 20, "fmin": 20, "log_floor": 1e-6}
    )
    audio = np.random.default_rng(0).normal(0, 0.1, (2, 4000)).astype(np.float32)
    bank = spectrogram.mel_filterbank(rate, 256, 20, 20.0, rate / 2)
    got = np.asarray(spectrogram.log_mel(jnp.asarray(audio), features, bank))
    # scipy scales each frame by 1 / sum(window): undo it to get |rfft|^2.
    window = signal.get_window("hann", features.window)
    _, _, z = signal.stft(
        audio, nperseg=features.window, noverlap=features.window - features.hop, nfft=256,
        window=window, boundary=None, padded=False,
    )  # fmt: skip
    power = np.abs(z * window.sum()) ** 2  # (B, bins, frames)
    expected = np.log(np.einsum("bkf,km->bfm", power, bank) + 1e-6)
    assert got.shape == expected.shape == (2, 48, 20)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    # Each filter is a triangle whose peak (1 at its centre) falls near an FFT bin.
    assert (bank.max(0) > 0.8).all() and (bank.max(0) <= 1).all() and (bank >= 0).all()
    assert (np.diff((bank > 0).sum(0)) >= 0).all()  # wider with frequency: even on the mel scale


def test_audio_longer_than_the_maximum_is_one_line() -> None:
    with pytest.raises(DataError, match=r"clip 1 lasts 1\.500 s, longer than data\.max_seconds=1\.0"):
        speech.pad_audio([np.zeros(800, np.int16), np.zeros(1200, np.int16)], 800, 1.0, "spoken_digits train")


TINY = {
    "voices": {"train": ["en-us+m1", "en+f2"], "val": ["en-029+m3"], "test": ["en-gb-x-rp+f3"]},
    "num_utterances": 6,
    "num_eval_utterances": 2,
    "min_digits": 1,
    "max_digits": 2,
    "speed": [160, 200],
    "pitch": [30, 60],
    "sample_rate": 8000,
    "seed": 0,
    "workers": 2,
    "alphabet": " abcdefghijklmnopqrstuvwxyz'",
    "features": {"window_ms": 25, "hop_ms": 10, "n_fft": 256, "n_mels": 16, "fmin": 20, "log_floor": 1e-6},
    "batch_size": 2,
    "eval_batch_size": 2,
}


@needs.espeak_ng
def test_synthesis_round_trip() -> None:
    """espeak-ng speaks the script; the clips are non-silent, the labels decode to digit words, the
    split voices are as configured, and a second load reads the cache (same arrays)."""
    data_dir = os.environ["TFDS_DATA_DIR"]
    dataset = spoken_digits.load(data_dir, max_seconds=2.0, **TINY)
    train = dataset.splits["train"].arrays()
    assert train["audio"].shape == (6, 16000) and train["audio"].dtype == np.int16
    assert (train["audio_length"] > 0.3 * 8000).all() and np.abs(train["audio"]).max() > 1000
    words = {
        speech.decode(row[:n], dataset.info["alphabet"])
        for row, n in zip(train["label"], train["label_length"], strict=True)
    }
    assert all(set(w.split()) <= set(spoken_digits.WORDS) for w in words)
    assert dataset.info["synthetic"] and dataset.info["voices"]["test"] == ["en-gb-x-rp+f3"]
    batch = dataset.transform(jax.random.PRNGKey(0), {k: v[:2] for k, v in train.items()}, False)
    assert batch["features"].shape == (2, *dataset.input_shape) and batch["feature_mask"].shape == (2, 198)
    again = spoken_digits.load(data_dir, max_seconds=2.0, **TINY).splits["test"].arrays()
    np.testing.assert_array_equal(again["audio"], dataset.splits["test"].arrays()["audio"])


@needs.espeak_ng
def test_too_long_audio_through_the_cli_is_one_line(tmp_path) -> None:
    """data.max_seconds below the clips' length: exit 2, one line naming the key, no run directory."""
    spoken_digits.load(os.environ["TFDS_DATA_DIR"], max_seconds=2.0, **TINY)  # the clips, cached
    overrides = [
        f"data.{k}={v}".replace("'", "")
        for k, v in TINY.items()
        if k not in ("features", "voices", "alphabet")
    ]
    voices = [f"data.voices.{s}=[{','.join(v)}]" for s, v in TINY["voices"].items()]
    proc = run_train(
        "+experiment=spoken_digits_ctc", *overrides, *voices, "data.features.n_mels=16",
        "data.max_seconds=0.3",
        "logger=none", f"hydra.run.dir={tmp_path / 'run'}", check=False, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "longer than data.max_seconds=0.3" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


def test_model_output_frames_ignore_the_padding() -> None:
    """Logits of the real frames do not change with how much padding follows them, and the output
    mask marks ceil(real / 4) frames after two stride-2 convolutions."""
    from flax import nnx

    from research.models.speech import SpeechCTC

    model = SpeechCTC((48, 16), 5, [4, 4], "gru", 8, 1, 0.0, rngs=nnx.Rngs(0))
    model.eval()
    real = np.random.default_rng(0).normal(size=(1, 30, 16)).astype(np.float32)
    outs = []
    for total in (40, 48):
        x = np.zeros((1, total, 16), np.float32)
        x[:, :30] = real
        logits, mask = nnx.jit(lambda m, x, k: m(x, k))(model, jnp.asarray(x), jnp.arange(total)[None] < 30)
        assert int(mask.sum()) == 8 and logits.shape == (1, total // 4, 5)
        outs.append(np.asarray(logits[0, :8]))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_speech_commands_streams_its_train_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mock speech_commands records (as TFDS gives them, _unknown_ among them) read in memory and
    streamed through grain: words as labels, _unknown_ skipped, the stream resumes from its state."""
    from research.data import speech_commands, tfds_source
    from tests import mock_speech_commands

    monkeypatch.setattr(tfds_source, "open_tfds", mock_speech_commands.open_tfds)
    config = {**{k: TINY[k] for k in ("alphabet", "features", "batch_size", "eval_batch_size")}}
    kept = set(speech_commands.TRANSCRIPTS.values())
    held = speech_commands.load("unused", None, 0, 8000, 1.0, in_memory=True, **config)
    val = held.splits["val"].arrays()
    assert (
        val["audio"].shape == (22, 8000) and val["label"].shape[1] == speech_commands.WIDTH
    )  # 24 less 2 unknown
    assert {
        speech.decode(r[:n], held.info["alphabet"])
        for r, n in zip(val["label"], val["label_length"], strict=True)
    } <= kept
    streamed = speech_commands.load("unused", None, 0, 8000, 1.0, in_memory=False, **config)
    assert not streamed.splits["train"].in_memory and streamed.splits["train"].num_examples == 96
    it = streamed.splits["train"].iterator(4, seed=0, shard_index=0, shard_count=1)
    for _ in range(3):
        batch = next(it)
        texts = {
            speech.decode(r[:n], held.info["alphabet"])
            for r, n in zip(batch["label"], batch["label_length"], strict=True)
        }
        assert batch["audio"].shape == (4, 8000) and texts <= kept
    state = it.get_state()
    after = next(it)
    it.set_state(state)
    np.testing.assert_array_equal(next(it)["audio"], after["audio"])
