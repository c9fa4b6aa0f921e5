"""Recurrent networks: tanh RNN, LSTM and GRU layers scanned over time, stacked, optionally bidirectional.

Each direction of each layer projects the whole input sequence with one matmul before
``jax.lax.scan`` (input-to-gate products do not depend on the state), so the scanned step
holds only the recurrent matmul and the gate arithmetic: one large matmul instead of T small ones.

Masks (B, T), 1 at real steps: a padded step leaves the state unchanged. So the forward
direction's final state is its state at each sequence's last real step, and the backward
direction (the same scan, reversed) passes the trailing padding with its initial state
and starts at each sequence's true end, wherever the padding lies.

Kernels are laid out (in, gates, hidden): tensor parallelism splits the hidden axis, so each
device holds every gate of its slice of units and the gate arithmetic stays local.
Equations and gate order follow PyTorch (LSTM: i, f, g, o; GRU: r, z, n).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models.layers import check_rate, choice, masked_mean, sequence_features

State = jax.Array | tuple[jax.Array, jax.Array]
POOLS = ("last", "mean")


def rnn_step(gx: jax.Array, gh: jax.Array, h: jax.Array) -> jax.Array:
    """h' = tanh(W_x x + b + W_h h)."""
    return jnp.tanh(gx[:, 0] + gh[:, 0])


def lstm_step(
    gx: jax.Array, gh: jax.Array, state: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """(h, c) -> (h', c'): c' = f c + i g, h' = o tanh(c'); gates from W_x x + b + W_h h."""
    _, c = state
    gates = gx + gh
    i, f, o = (jax.nn.sigmoid(gates[:, k]) for k in (0, 1, 3))
    c = f * c + i * jnp.tanh(gates[:, 2])
    return o * jnp.tanh(c), c


def gru_step(gx: jax.Array, gh: jax.Array, h: jax.Array) -> jax.Array:
    """h' = (1 - z) n + z h, n = tanh(W_xn x + b_xn + r (W_hn h + b_hn)): the reset gate scales W_hn h."""
    r = jax.nn.sigmoid(gx[:, 0] + gh[:, 0])
    z = jax.nn.sigmoid(gx[:, 1] + gh[:, 1])
    n = jnp.tanh(gx[:, 2] + r * gh[:, 2])
    return (1 - z) * n + z * h


# cell name -> (gates, step, whether the state carries an LSTM memory cell)
CELLS: dict[str, tuple[int, Callable[..., State], bool]] = {
    "rnn": (1, rnn_step, False),
    "lstm": (4, lstm_step, True),
    "gru": (3, gru_step, False),
}


def _hidden(state: State) -> jax.Array:
    return state[0] if isinstance(state, tuple) else state


class Recurrence(nnx.Module):
    """One direction of one layer: ``(x (B, T, F), mask (B, T)) -> (outputs (B, T, H), final h (B, H))``."""

    def __init__(self, cell: str, in_features: int, hidden_size: int, reverse: bool, *, rngs: nnx.Rngs):
        gates, self.step, self.has_memory = CELLS[cell]
        self.input = nnx.LinearGeneral(in_features, (gates, hidden_size), rngs=rngs)
        # Only the GRU needs a recurrent bias: the reset gate multiplies W_hn h + b_hn.
        self.recurrent = nnx.LinearGeneral(
            hidden_size,
            (gates, hidden_size),
            use_bias=cell == "gru",
            kernel_init=nnx.initializers.orthogonal(),
            rngs=rngs,
        )
        self.hidden_size, self.reverse = hidden_size, reverse

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        gx = jnp.swapaxes(self.input(x), 0, 1)  # (T, B, gates, H): every step's input part at once
        keep = jnp.swapaxes(mask, 0, 1)[..., None].astype(bool)  # (T, B, 1)

        def body(state: State, step_in: tuple[jax.Array, jax.Array]) -> tuple[State, jax.Array]:
            g, real = step_in
            new = self.step(g, self.recurrent(_hidden(state)), state)
            state = jax.tree.map(lambda n, o: jnp.where(real, n, o), new, state)
            return state, _hidden(state)

        h0 = jnp.zeros((x.shape[0], self.hidden_size), gx.dtype)
        init = (h0, h0) if self.has_memory else h0
        final, outputs = jax.lax.scan(body, init, (gx, keep), reverse=self.reverse)
        return jnp.swapaxes(outputs, 0, 1), _hidden(final)


class RecurrentLayer(nnx.Module):
    """A forward and optionally a backward recurrence over the same input; features concatenated."""

    def __init__(self, cell: str, in_features: int, hidden_size: int, bidirectional: bool, *, rngs: nnx.Rngs):
        self.forward = Recurrence(cell, in_features, hidden_size, False, rngs=rngs)
        self.backward = Recurrence(cell, in_features, hidden_size, True, rngs=rngs) if bidirectional else None

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        outputs, last = self.forward(x, mask)
        if self.backward is None:
            return outputs, last
        back_outputs, back_last = self.backward(x, mask)
        return jnp.concatenate([outputs, back_outputs], -1), jnp.concatenate([last, back_last], -1)


class RNNEncoder(nnx.Module):
    """Stacked recurrent layers, then one vector per sequence.

    ``pool: last``: each direction's final state (the forward one at the last real step,
    the backward one at the first), as PyTorch's ``h_n``; ``pool: mean``: the top layer's
    outputs averaged over real steps. Dropout acts between layers and on the pooled vector.
    """

    def __init__(
        self,
        in_features: int,
        cell: str,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        pool: str,
        dropout: float,
        *,
        rngs: nnx.Rngs,
    ):
        choice("cell", cell, tuple(CELLS))
        self.pool = choice("pool", pool, POOLS)
        if num_layers < 1 or hidden_size < 1:
            raise ConfigError(
                f"model.num_layers={num_layers} and model.hidden_size={hidden_size} must be >= 1"
            )
        self.features = hidden_size * (2 if bidirectional else 1)
        sizes = [in_features] + [self.features] * (num_layers - 1)
        self.layers = nnx.List(
            [RecurrentLayer(cell, size, hidden_size, bidirectional, rngs=rngs) for size in sizes]
        )
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        mask = jnp.ones(x.shape[:2], bool) if mask is None else mask
        for i, layer in enumerate(self.layers):
            x, last = layer(self.dropout(x) if i else x, mask)
        return self.dropout(last if self.pool == "last" else masked_mean(x, mask))


class RNNClassifier(nnx.Module):
    """``model(x, mask=None) -> (B, num_outputs)``: token ids (B, T) through an embedding when
    ``vocab_size`` is given, else float sequences (B, T, F) straight in.
    """

    def __init__(
        self,
        input_shape: Sequence[int] | None,
        num_outputs: int,
        cell: str,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        pool: str,
        dropout: float,
        vocab_size: int | None = None,
        embed_dim: int | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        if vocab_size is not None:
            if not embed_dim:
                raise ConfigError("model.embed_dim must be set for token inputs (the data has a vocabulary)")
            self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
            in_features = embed_dim
        else:
            self.embed = None
            in_features = sequence_features("RNNClassifier", input_shape or ())
        self.encoder = RNNEncoder(
            in_features, cell, hidden_size, num_layers, bidirectional, pool, dropout, rngs=rngs
        )
        self.head = nnx.Linear(self.encoder.features, num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        if self.embed is not None:
            x = self.embed(x)
        return self.head(self.encoder(x, mask))


class RNNRegressor(nnx.Module):
    """``model(x (B, T, F) float, mask=None) -> (B, num_outputs)``: e.g. the next ``num_outputs``
    values of a series (a forecast horizon) from a window of it. Unscaled linear outputs.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        cell: str,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        pool: str,
        dropout: float,
        *,
        rngs: nnx.Rngs,
    ):
        in_features = sequence_features("RNNRegressor", input_shape)
        self.encoder = RNNEncoder(
            in_features, cell, hidden_size, num_layers, bidirectional, pool, dropout, rngs=rngs
        )
        self.head = nnx.Linear(self.encoder.features, num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self.head(self.encoder(x, mask))
