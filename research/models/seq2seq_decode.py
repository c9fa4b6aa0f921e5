"""Greedy and beam-search decoding of an encoder-decoder, each one compiled loop.

As in the LM's sampler (``sampling.py``), the tokens live in a fixed (N, steps) buffer that
starts with ``<s>``: step ``i`` reads the logits at position ``i`` (causal attention makes
the unwritten positions to its right irrelevant) and writes position ``i + 1``. The decoder
is recomputed over the buffer at every step and the encoder runs once: at these lengths
(tens of tokens) that costs less than keeping a key/value cache. A sequence that has written
``</s>`` writes ``<pad>`` from then on.

``beam_search`` keeps the ``beam`` best prefixes by summed log-probability; a finished beam
is extended only by ``<pad>`` at no cost, so it competes with the unfinished ones as it is.
The winner maximises score / ((5 + length) / 6) ** ``length_penalty`` (GNMT, Wu et al.
2016; 0: the plain log-probability). With ``beam=1`` it is greedy decoding, token for token.

``translate`` drives any ``EncoderDecoder``: the Transformer (``seq2seq.py``) and the LSTM with
attention (``seq2seq_lstm.py``) each encode once and precompute what every step reuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

# logits_fn(tokens (N, steps) int) -> (N, steps, vocab) logits of the next token at each position
LogitsFn = Callable[[jax.Array], jax.Array]
GNMT_BASE = 5.0  # the length penalty's offset: ((5 + length) / 6) ** alpha


class EncoderDecoder(Protocol):
    """What ``translate`` calls. ``memory`` is any pytree of (B, ...) arrays; the cache is
    whatever the model reuses at every step (cross-attention keys and values, a first state)."""

    def encode(self, source: jax.Array) -> tuple[Any, jax.Array]:
        """(memory, source mask (B, S): 1 on real tokens)."""
        ...

    def memory_keys_values(self, memory: Any) -> Any: ...

    def decode_cached(self, cache: Any, source_mask: jax.Array, target_in: jax.Array) -> jax.Array:
        """(B, T, vocab) logits of each next token from ``target_in`` (B, T), causally."""
        ...


def start(count: int, steps: int, bos_id: int, pad_id: int) -> jax.Array:
    """(count, steps + 1) buffers: ``<s>`` then padding."""
    return jnp.full((count, steps + 1), pad_id, jnp.int32).at[:, 0].set(bos_id)


def greedy(logits_fn: LogitsFn, count: int, steps: int, bos_id: int, eos_id: int, pad_id: int) -> jax.Array:
    """(count, steps) tokens, each the most likely after the ones before."""

    def step(i: jax.Array, tokens: jax.Array) -> jax.Array:
        logits = jax.lax.dynamic_index_in_dim(logits_fn(tokens[:, :-1]), i, axis=1, keepdims=False)
        done = jnp.any((tokens == eos_id) & (jnp.arange(steps + 1) <= i), axis=1)
        token = jnp.where(done, pad_id, jnp.argmax(logits, -1)).astype(jnp.int32)
        return jax.lax.dynamic_update_index_in_dim(tokens, token, i + 1, axis=1)

    return jax.lax.fori_loop(0, steps, step, start(count, steps, bos_id, pad_id))[:, 1:]


def beam_search(
    logits_fn: LogitsFn,
    count: int,
    steps: int,
    beam: int,
    length_penalty: float,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> tuple[jax.Array, jax.Array]:
    """((count, steps) tokens of the best beam, (count,) its summed log-probability).

    ``logits_fn`` reads ``count * beam`` rows, beam-major within each example.
    """
    tokens = start(count * beam, steps, bos_id, pad_id).reshape(count, beam, steps + 1)
    scores = jnp.tile(jnp.where(jnp.arange(beam) == 0, 0.0, -jnp.inf), (count, 1))  # one live beam at first
    finished = jnp.zeros((count, beam), bool)

    def step(i: jax.Array, carry: tuple) -> tuple:
        tokens, scores, finished = carry
        logits = logits_fn(tokens.reshape(count * beam, steps + 1)[:, :-1])
        logp = jax.nn.log_softmax(
            jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False).astype(jnp.float32)
        )
        logp = logp.reshape(count, beam, -1)
        vocab = logp.shape[-1]
        only_pad = jnp.where(jnp.arange(vocab) == pad_id, 0.0, -jnp.inf)
        logp = jnp.where(finished[..., None], only_pad, logp)
        best, index = jax.lax.top_k((scores[..., None] + logp).reshape(count, beam * vocab), beam)
        parent, token = index // vocab, (index % vocab).astype(jnp.int32)
        tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1)
        tokens = jax.lax.dynamic_update_index_in_dim(tokens, token[..., None], i + 1, axis=2)
        finished = jnp.take_along_axis(finished, parent, axis=1) | (token == eos_id)
        return tokens, best, finished

    tokens, scores, _ = jax.lax.fori_loop(0, steps, step, (tokens, scores, finished))
    length = jnp.sum(tokens[..., 1:] != pad_id, axis=-1).astype(jnp.float32)
    ranked = scores / ((GNMT_BASE + length) / (GNMT_BASE + 1.0)) ** length_penalty
    winner = jnp.argmax(ranked, axis=1)
    best = jnp.take_along_axis(tokens, winner[:, None, None], axis=1)[:, 0, 1:]
    return best, jnp.take_along_axis(scores, winner[:, None], axis=1)[:, 0]


def sequence_log_prob(logits_fn: LogitsFn, tokens: jax.Array, bos_id: int, pad_id: int) -> jax.Array:
    """(N,) summed log-probability of ``tokens`` (N, steps) up to its padding: the beam's score."""
    inputs = jnp.concatenate([jnp.full((tokens.shape[0], 1), bos_id, tokens.dtype), tokens[:, :-1]], axis=1)
    logp = jax.nn.log_softmax(logits_fn(inputs).astype(jnp.float32))
    picked = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(tokens != pad_id, picked, 0.0), axis=1)


def translate(
    model: EncoderDecoder,
    source: jax.Array,
    steps: int,
    beam: int,
    length_penalty: float,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> jax.Array:
    """(B, steps) output tokens of an encoder-decoder: greedy for ``beam`` 1, else the beam
    search's best."""
    memory, mask = model.encode(source)
    if beam > 1:  # each example's rows beam-major, as beam_search reads them
        memory, mask = jax.tree.map(lambda a: jnp.repeat(a, beam, axis=0), (memory, mask))
    kvs = model.memory_keys_values(memory)

    def logits_fn(tokens: jax.Array) -> jax.Array:
        return model.decode_cached(kvs, mask, tokens)

    if beam == 1:
        return greedy(logits_fn, source.shape[0], steps, bos_id, eos_id, pad_id)
    return beam_search(logits_fn, source.shape[0], steps, beam, length_penalty, bos_id, eos_id, pad_id)[0]
