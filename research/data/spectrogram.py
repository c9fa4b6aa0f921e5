"""Log-mel spectrograms on device: framing, a Hann window, ``jnp.fft.rfft``, a mel filterbank.

Only raw int16 audio crosses from host to device; the features are computed inside the
compiled step, as images are normalised there. The filterbank is a constant matrix built
once in numpy (HTK's mel scale, triangles that meet at their neighbours' centres); each
utterance's log-mels are standardised per mel band over its real frames (cepstral mean
and variance normalisation), so loudness and a speaker's spectral tilt matter less.
Training batches can be masked in time and frequency (SpecAugment, Park et al. 2019).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from research.errors import ConfigError

INT16_SCALE = 32768.0  # int16 samples to [-1, 1)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK's mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float32: triangular filters evenly spaced on the mel scale, peak 1."""
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ConfigError(
            f"data.features: need 0 <= fmin < fmax <= sample_rate / 2, got {fmin}, {fmax}, {sample_rate}"
        )
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Features:
    """How audio becomes log-mels: window and hop in samples, FFT size, mel bands, SpecAugment."""

    sample_rate: int
    window: int
    hop: int
    n_fft: int
    n_mels: int
    fmin: float
    fmax: float
    log_floor: float  # added to the mel energies before the log
    freq_masks: int = 0  # training only: bands of up to freq_mask_width mels set to 0
    freq_mask_width: int = 0
    time_masks: int = 0  # training only: spans of up to time_mask_width frames set to 0
    time_mask_width: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.hop <= self.window <= self.n_fft:
            raise ConfigError(
                f"data.features: need 0 < hop ({self.hop}) <= window ({self.window}) <= n_fft ({self.n_fft})"
            )
        if self.n_mels < 1 or self.log_floor <= 0:
            raise ConfigError("data.features.n_mels must be >= 1 and data.features.log_floor > 0")
        if min(self.freq_masks, self.freq_mask_width, self.time_masks, self.time_mask_width) < 0:
            raise ConfigError("data.features: SpecAugment masks and widths must be >= 0")

    def num_frames(self, num_samples: int | np.ndarray) -> np.ndarray:
        """Frames of ``num_samples`` audio: whole windows only (at least one)."""
        return np.maximum(1, (np.asarray(num_samples) - self.window) // self.hop + 1)


def frames(audio: jax.Array, window: int, hop: int) -> jax.Array:
    """(B, S) -> (B, F, window): overlapping windows every ``hop`` samples (whole ones only)."""
    count = max(1, (audio.shape[-1] - window) // hop + 1)
    index = hop * np.arange(count)[:, None] + np.arange(window)[None]
    return audio[:, index]


def power_spectrum(audio: jax.Array, features: Features) -> jax.Array:
    """(B, S) float -> (B, F, n_fft // 2 + 1): |rfft(Hann-windowed frame)|^2."""
    hann = np.hanning(features.window + 1)[:-1].astype(np.float32)  # periodic, as scipy's get_window
    spectrum = jnp.fft.rfft(frames(audio, features.window, features.hop) * hann, n=features.n_fft)
    return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def log_mel(audio: jax.Array, features: Features, filterbank: np.ndarray) -> jax.Array:
    """(B, S) float audio -> (B, F, n_mels) log mel energies."""
    return jnp.log(power_spectrum(audio, features) @ filterbank + features.log_floor)


def standardize(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Each utterance's (B, F, M) features to zero mean, unit variance per band over its real
    frames (``mask`` (B, F)); padded frames become 0."""
    m = mask[..., None].astype(x.dtype)
    count = jnp.maximum(m.sum(1, keepdims=True), 1.0)
    mean = (x * m).sum(1, keepdims=True) / count
    var = (((x - mean) * m) ** 2).sum(1, keepdims=True) / count
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * m


def spec_augment(rng: jax.Array, x: jax.Array, features: Features) -> jax.Array:
    """Zero random bands of mels and spans of frames, independently per utterance."""
    batch, num_frames, num_mels = x.shape
    keys = jax.random.split(rng, 2)
    for key, count, width, axis, size in (
        (keys[0], features.freq_masks, features.freq_mask_width, 2, num_mels),
        (keys[1], features.time_masks, features.time_mask_width, 1, num_frames),
    ):
        if not count or not width:
            continue
        width_key, start_key = jax.random.split(key)
        widths = jax.random.randint(width_key, (batch, count), 0, width + 1)
        starts = jax.random.randint(start_key, (batch, count), 0, max(size - width, 1))
        pos = jnp.arange(size)[None, None]
        hit = ((pos >= starts[..., None]) & (pos < (starts + widths)[..., None])).any(1)  # (B, size)
        x = x * jnp.where(jnp.expand_dims(hit, 3 - axis), 0.0, 1.0)
    return x
