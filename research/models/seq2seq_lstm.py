"""An LSTM encoder-decoder with attention (Luong, Pham and Manning 2015), for sequence-to-sequence tasks.

The encoder is a stack of bidirectional LSTM layers (``rnn.RecurrentLayer``) over the
embedded source; a padded step leaves each direction's state unchanged, so the padding
changes no state, and attention never looks at it. The decoder is a stack of
unidirectional LSTM cells (``rnn.lstm_step`` with ``rnn.Recurrence``'s weights) started from
the encoder's final states through a learned bridge. At every step the top cell's state
``h_t`` attends over the encoder's states (padded positions masked out), and the context
``c_t`` and ``h_t`` make the attentional vector ``h~_t = tanh(W_c [c_t; h_t])``, which predicts
the next token and is fed into the next step's input beside the token's embedding (Luong's
input feeding: the decoder knows where it attended before).

Attention, ``attention``: ``general`` (the default) scores ``h_t . W_a h_s``, Luong's best
global score on WMT and one matmul per step once ``W_a h_s`` is computed for the whole source;
``additive`` scores ``v . tanh(W_q h_t + W_k h_s)`` (Bahdanau et al. 2014's form, scored on the
current state as in Luong's "concat"), at the cost of a tanh over every (step, position) pair.
Both precompute their keys of the source once (``memory_keys_values``), as decoding reuses them.

Source and target share one vocabulary and one embedding; ``h~_t`` has the embedding's width,
so the output projection can reuse it (``tie_embeddings``). The decoder reads its input one
token at a time, so it is causal by construction. Dropout acts on the embeddings, between
encoder layers, on the encoder's states and on ``h~_t`` before the output projection, all
outside the per-step loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models.layers import check_rate, choice
from research.models.rnn import Recurrence, RecurrentLayer, lstm_step

ATTENTIONS = ("general", "additive")
# (keys (B, S, K), values (B, S, F), the decoder's initial (h, c) per layer, each (B, H))
Cache = tuple[jax.Array, jax.Array, list[tuple[jax.Array, jax.Array]]]


class SourceAttention(nnx.Module):
    """A query state (B, Q) against the source's keys (B, S, K): weights (B, S), padding at zero."""

    def __init__(self, kind: str, query_dim: int, memory_dim: int, attention_dim: int, *, rngs: nnx.Rngs):
        self.kind = choice("attention", kind, ATTENTIONS)
        if self.kind == "general":
            self.key = nnx.Linear(memory_dim, query_dim, use_bias=False, rngs=rngs)
            self.query, self.score = None, None
        else:
            self.key = nnx.Linear(memory_dim, attention_dim, use_bias=False, rngs=rngs)
            self.query = nnx.Linear(query_dim, attention_dim, rngs=rngs)
            self.score = nnx.Linear(attention_dim, 1, use_bias=False, rngs=rngs)

    def keys(self, memory: jax.Array) -> jax.Array:
        """(B, S, K): ``W_a h_s`` (general) or ``W_k h_s`` (additive), once per source."""
        return self.key(memory)

    def __call__(self, query: jax.Array, keys: jax.Array, mask: jax.Array) -> jax.Array:
        if self.score is None:
            scores = jnp.einsum("bq,bsq->bs", query, keys)
        else:
            scores = self.score(jnp.tanh(keys + self.query(query)[:, None]))[..., 0]
        scores = jnp.where(mask.astype(bool), scores.astype(jnp.float32), -jnp.inf)
        return jax.nn.softmax(scores, axis=-1)


class BiLSTMEncoder(nnx.Module):
    """``(x (B, S, F), mask (B, S)) -> (states (B, S, 2H), final (B, 2H))``: the top layer's
    states and its final ones (forward at the last real step, backward at the first)."""

    def __init__(
        self, in_features: int, hidden_size: int, num_layers: int, dropout: float, *, rngs: nnx.Rngs
    ):
        sizes = [in_features] + [2 * hidden_size] * (num_layers - 1)
        self.layers = nnx.List([RecurrentLayer("lstm", n, hidden_size, True, rngs=rngs) for n in sizes])
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        for i, layer in enumerate(self.layers):
            x, final = layer(self.dropout(x) if i else x, mask)
        return x, final


def _check_sizes(**sizes: int) -> None:
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key}={value!r} must be an integer >= 1")


class Seq2SeqLSTM(nnx.Module):
    """``model(source (B, S) int, target_in (B, T) int) -> logits (B, T, vocab_size)``.

    The interface of ``seq2seq.Seq2SeqTransformer`` (``encode``, ``decode``,
    ``memory_keys_values``, ``decode_cached``, ``cross_attention``), so the translation task and
    ``seq2seq_decode.translate`` drive either. ``max_source_len`` and ``max_target_len``, which
    the task passes every encoder-decoder, bound nothing here: a recurrence reads any length.
    """

    def __init__(
        self,
        vocab_size: int,
        max_source_len: int,
        max_target_len: int,
        embed_dim: int,
        encoder_hidden: int,
        encoder_layers: int,
        hidden_size: int,
        decoder_layers: int,
        attention: str,
        attention_dim: int,
        dropout: float,
        tie_embeddings: bool = True,
        pad_id: int = 0,
        *,
        rngs: nnx.Rngs,
    ):
        _check_sizes(
            embed_dim=embed_dim, encoder_hidden=encoder_hidden, encoder_layers=encoder_layers,
            hidden_size=hidden_size, decoder_layers=decoder_layers, attention_dim=attention_dim,
        )  # fmt: skip
        self.pad_id, self.hidden_size = pad_id, hidden_size
        memory_dim = 2 * encoder_hidden
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.encoder = BiLSTMEncoder(embed_dim, encoder_hidden, encoder_layers, dropout, rngs=rngs)
        self.bridge = nnx.Linear(memory_dim, decoder_layers * 2 * hidden_size, rngs=rngs)
        # The first cell reads the token's embedding and the previous attentional vector (input feeding).
        sizes = [2 * embed_dim] + [hidden_size] * (decoder_layers - 1)
        self.cells = nnx.List([Recurrence("lstm", n, hidden_size, False, rngs=rngs) for n in sizes])
        self.attention = SourceAttention(attention, hidden_size, memory_dim, attention_dim, rngs=rngs)
        self.combine = nnx.Linear(memory_dim + hidden_size, embed_dim, use_bias=False, rngs=rngs)
        self.output = None if tie_embeddings else nnx.Linear(embed_dim, vocab_size, rngs=rngs)

    def encode(self, source: jax.Array, mask: jax.Array | None = None) -> tuple[tuple, jax.Array]:
        """((states (B, S, 2 encoder_hidden), final (B, 2 encoder_hidden)), mask (B, S): 1 on real
        tokens, by default wherever ``source`` is not ``pad_id``)."""
        mask = (source != self.pad_id).astype(jnp.float32) if mask is None else mask
        states, final = self.encoder(self.dropout(self.embed(source)), mask)
        return (self.dropout(states), final), mask

    def memory_keys_values(self, memory: tuple) -> Cache:
        """What every decoding step reuses: the attention's keys and values of the source and the
        decoder's initial state (the bridge of the encoder's final states)."""
        states, final = memory
        bridged = jnp.tanh(self.bridge(final)).reshape(final.shape[0], len(self.cells), 2, self.hidden_size)
        initial = [(bridged[:, i, 0], bridged[:, i, 1]) for i in range(len(self.cells))]
        return self.attention.keys(states), states, initial

    def _run(self, cache: Cache, source_mask: jax.Array, target_in: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(attentional vectors (B, T, embed_dim), attention weights (B, T, S)), one step per token."""
        keys, values, initial = cache
        embedded = jnp.swapaxes(self.dropout(self.embed(target_in)), 0, 1)  # (T, B, E)
        fed = jnp.zeros(embedded.shape[1:], embedded.dtype)

        def step(carry: tuple, token: jax.Array) -> tuple[tuple, tuple[jax.Array, jax.Array]]:
            states, fed = carry
            x, new_states = jnp.concatenate([token, fed], -1), []
            for cell, state in zip(self.cells, states, strict=True):
                state = lstm_step(cell.input(x), cell.recurrent(state[0]), state)
                new_states.append(state)
                x = state[0]
            weights = self.attention(x, keys, source_mask)
            context = jnp.einsum("bs,bsf->bf", weights.astype(values.dtype), values)
            out = jnp.tanh(self.combine(jnp.concatenate([context, x], -1)))
            return (new_states, out), (out, weights)

        _, (outputs, weights) = jax.lax.scan(step, (initial, fed), embedded)
        return jnp.swapaxes(outputs, 0, 1), jnp.swapaxes(weights, 0, 1)

    def decode_cached(self, cache: Cache, source_mask: jax.Array, target_in: jax.Array) -> jax.Array:
        """``decode`` with the keys, values and initial state of ``memory_keys_values``."""
        outputs = self.dropout(self._run(cache, source_mask, target_in)[0])
        return self.embed.attend(outputs) if self.output is None else self.output(outputs)

    def decode(self, memory: tuple, source_mask: jax.Array, target_in: jax.Array) -> jax.Array:
        """Logits (B, T, vocab) of each next target token, from the tokens so far (<s> first)."""
        return self.decode_cached(self.memory_keys_values(memory), source_mask, target_in)

    def __call__(self, source: jax.Array, target_in: jax.Array) -> jax.Array:
        return self.decode(*self.encode(source), target_in)

    def cross_attention(self, source: jax.Array, target_in: jax.Array) -> jax.Array:
        """(B, T, S) attention weights of each decoding step over the source."""
        memory, mask = self.encode(source)
        return self._run(self.memory_keys_values(memory), mask, target_in)[1]
