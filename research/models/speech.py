"""An acoustic model for CTC: 2-D convolutions over time x mel, a bidirectional RNN, per-frame logits.

The front end's convolutions (3x3, stride 2 in time and frequency, as Deep Speech 2's) shorten
the sequence the recurrence scans and learn local spectro-temporal patterns; each halves the
frames, so a frame mask (B, T) becomes the mask of every second frame. The recurrent layers are
research/models/rnn.py's (masked: padding leaves the state unchanged, the backward direction
starts at each utterance's true end). A linear layer gives every output frame one logit per
character plus CTC's blank.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from research.errors import ConfigError
from research.models.conv import CONV_IMPLS, conv_function, resolve
from research.models.layers import activation as activation_fn
from research.models.layers import check_rate, choice
from research.models.rnn import CELLS, RecurrentLayer


class ConvFrontEnd(nnx.Module):
    """(B, T, M) features -> (B, ceil(T / 2^k), ceil(M / 2^k) * channels[-1]), k = len(channels)."""

    def __init__(
        self, num_mels: int, channels: Sequence[int], activation: str, conv_impl: str, *, rngs: nnx.Rngs
    ):
        choice("conv_impl", conv_impl, CONV_IMPLS)
        conv = conv_function(resolve(conv_impl, "im2col", "xla"))
        sizes = [1, *channels]
        self.convs = nnx.List(
            [
                nnx.Conv(
                    c_in, c_out, (3, 3), strides=(2, 2), padding="SAME", conv_general_dilated=conv, rngs=rngs
                )
                for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.norms = nnx.List([nnx.LayerNorm(c, rngs=rngs) for c in channels])
        self.act = activation_fn(activation)
        mels = num_mels
        for _ in channels:
            mels = -(-mels // 2)
        self.features = mels * channels[-1]

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = x[..., None]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x, mask = self.act(norm(conv(x))), mask[:, ::2]
        return x.reshape(*x.shape[:2], -1) * mask[..., None], mask


class SpeechCTC(nnx.Module):
    """``model(features (B, T, M), mask (B, T)) -> (logits (B, T', num_outputs), mask (B, T'))``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int],
        cell: str,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        activation: str = "gelu",
        conv_impl: str = "auto",
        *,
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 2:
            raise ConfigError(
                f"SpeechCTC reads (frames, mels) features, got input_shape {tuple(input_shape)}"
            )
        if not channels or num_layers < 1 or hidden_size < 1:
            raise ConfigError("model.channels must list >= 1 width; model.num_layers, model.hidden_size >= 1")
        choice("cell", cell, tuple(CELLS))
        self.front = ConvFrontEnd(input_shape[1], channels, activation, conv_impl, rngs=rngs)
        sizes = [self.front.features] + [2 * hidden_size] * (num_layers - 1)
        self.layers = nnx.List([RecurrentLayer(cell, size, hidden_size, True, rngs=rngs) for size in sizes])
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.head = nnx.Linear(2 * hidden_size, num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        x, mask = self.front(x, mask)
        for layer in self.layers:
            x, _ = layer(self.dropout(x), mask)
        return self.head(self.dropout(x)), mask
