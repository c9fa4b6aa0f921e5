"""Autoregressive sampling from a causal LM in one compiled loop.

nanoGPT appends each new token and crops the sequence to the context length, so the
forward pass sees a new shape at every step; under jit each shape is a new compile.
Here the context lives in a fixed (B, max_len) buffer filled from the left: the logits
for the next token are read at the last filled position, and causal attention makes the
unfilled positions to its right irrelevant. Once the buffer is full it shifts left by one
per token (the nanoGPT crop). The loop is one ``lax.fori_loop``, compiled once per batch
size and ``max_new_tokens``; prompt length, temperature and top-k are traced values.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def pick(logits: jax.Array, temperature: jax.Array, top_k: jax.Array, key: jax.Array) -> jax.Array:
    """Next tokens (B,) from logits (B, V): sample the ``top_k`` largest (0: all) at ``temperature``;
    temperature 0 is greedy (argmax)."""
    vocab = logits.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth = jax.lax.dynamic_index_in_dim(jnp.sort(logits, axis=-1), vocab - k, axis=-1)  # (B, 1)
    logits = jnp.where(logits < kth, -jnp.inf, logits)
    sampled = jax.random.categorical(key, logits / jnp.where(temperature > 0, temperature, 1.0), axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1))


@partial(jax.jit, static_argnums=(0, 7))
def _sample(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    buffer: jax.Array,
    length: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
    key: jax.Array,
    steps: int,
) -> jax.Array:
    """``steps`` new tokens (B, steps) after the first ``length`` tokens of ``buffer`` (B, max_len)."""
    context = buffer.shape[1]

    def step(i: jax.Array, carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple:
        buffer, length, out = carry
        logits = nnx.merge(graphdef, state)(buffer)  # (B, max_len, V)
        last = jax.lax.dynamic_index_in_dim(logits, length - 1, axis=1, keepdims=False)
        token = pick(last, temperature, top_k, jax.random.fold_in(key, i)).astype(buffer.dtype)
        full = length == context
        buffer = jnp.where(full, jnp.roll(buffer, -1, axis=1), buffer)
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, token, jnp.minimum(length, context - 1), axis=1)
        return buffer, jnp.minimum(length + 1, context), out.at[:, i].set(token)

    out = jnp.zeros((buffer.shape[0], steps), buffer.dtype)
    return jax.lax.fori_loop(0, steps, step, (buffer, length, out))[2]


def generate(
    model: nnx.Module,
    prompt_ids: jax.Array,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    rng: jax.Array,
) -> jax.Array:
    """``prompt_ids`` (B, P) followed by ``max_new_tokens`` sampled tokens: (B, P + max_new_tokens).

    ``model`` is a causal LM with a ``max_len`` attribute (``TransformerLM``), for instance
    ``nnx.merge(graphdef, params, model_state)`` from a task's split state; it runs in eval
    mode (no dropout) without changing the caller's module. ``top_k`` None or 0: no cut-off.
    """
    prompt = np.asarray(prompt_ids, np.int32)  # host-side set-up: no per-shape device compiles
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt_ids must be (batch, length >= 1) token ids, got shape {prompt.shape}")
    context = int(model.max_len)
    window = prompt[:, -context:]  # the nanoGPT crop
    buffer = np.zeros((prompt.shape[0], context), np.int32)
    buffer[:, : window.shape[1]] = window
    graphdef, state = nnx.split(model)
    eval_model = nnx.merge(graphdef, state)
    eval_model.eval()
    graphdef = nnx.graphdef(eval_model)
    new = _sample(
        graphdef,
        state,
        buffer,
        np.int32(window.shape[1]),
        np.float32(temperature),
        np.int32(top_k or 0),
        rng,
        int(max_new_tokens),
    )
    return jnp.concatenate([prompt, new], axis=1)
