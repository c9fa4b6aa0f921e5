"""Recommenders over id embeddings: a score for (user, item) as a dot product of two encodings.

Both models give ``encode_users(users)`` (B, D) and ``encode_items(items)`` (B, D), so one task
scores a batch's pairs (their row-wise dot), all items for some users (ranking), and the
in-batch pairs (B, B) of a sampled softmax the same way.

``MatrixFactorization``: r(u, i) = p_u . q_i + b_u + b_i + mu (Koren, Bell & Volinsky 2009);
the biases ride in the encodings, [p_u, 1, b_u + mu] . [q_i, b_i, 1].
``TwoTower``: an MLP over each id embedding (the YouTube/TFRS retrieval shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import jax
import jax.numpy as jnp
from flax import nnx

from research.models.layers import activation as activation_fn


class MatrixFactorization(nnx.Module):
    """User and item factors of ``rank`` (normal, std ``init_scale``), biases at 0, mu at ``global_bias``."""

    def __init__(
        self,
        num_users: int,
        num_items: int,
        rank: int,
        init_scale: float,
        global_bias: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        init = nnx.initializers.normal(init_scale)
        self.user_factors = nnx.Embed(num_users, rank, embedding_init=init, rngs=rngs)
        self.item_factors = nnx.Embed(num_items, rank, embedding_init=init, rngs=rngs)
        self.user_bias = nnx.Param(jnp.zeros((num_users,)))
        self.item_bias = nnx.Param(jnp.zeros((num_items,)))
        self.global_bias = nnx.Param(jnp.full((), global_bias, jnp.float32))

    def encode_users(self, users: jax.Array) -> jax.Array:
        p = self.user_factors(users)
        bias = self.user_bias[...][users] + self.global_bias[...]
        return jnp.concatenate([p, jnp.ones_like(bias)[:, None], bias[:, None]], axis=-1)

    def encode_items(self, items: jax.Array) -> jax.Array:
        q = self.item_factors(items)
        bias = self.item_bias[...][items]
        return jnp.concatenate([q, bias[:, None], jnp.ones_like(bias)[:, None]], axis=-1)

    def factors(self, users: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The factors p_u, q_i alone: what an L2 penalty on the batch's rows reads."""
        return self.user_factors(users), self.item_factors(items)

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return jnp.sum(self.encode_users(users) * self.encode_items(items), axis=-1)


class Tower(nnx.Module):
    """Embedding -> [Linear -> activation] per hidden size -> Linear to ``output_dim``."""

    def __init__(
        self,
        count: int,
        embed_dim: int,
        hidden_sizes: Sequence[int],
        output_dim: int,
        act: str,
        rngs: nnx.Rngs,
    ):
        self.embed = nnx.Embed(count, embed_dim, rngs=rngs)
        sizes = [embed_dim, *(int(h) for h in hidden_sizes)]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairwise(sizes)])
        self.head = nnx.Linear(sizes[-1], output_dim, rngs=rngs)
        self.activation = activation_fn(act)

    def __call__(self, ids: jax.Array) -> jax.Array:
        x = self.embed(ids)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.head(x)


class TwoTower(nnx.Module):
    """A user tower and an item tower; the score is the dot of their outputs."""

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embed_dim: int,
        hidden_sizes: Sequence[int],
        output_dim: int,
        activation: str = "relu",
        *,
        rngs: nnx.Rngs,
    ):
        self.user_tower = Tower(num_users, embed_dim, hidden_sizes, output_dim, activation, rngs)
        self.item_tower = Tower(num_items, embed_dim, hidden_sizes, output_dim, activation, rngs)

    def encode_users(self, users: jax.Array) -> jax.Array:
        return self.user_tower(users)

    def encode_items(self, items: jax.Array) -> jax.Array:
        return self.item_tower(items)

    def factors(self, users: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The id embeddings of the batch's rows (the L2 penalty's)."""
        return self.user_tower.embed(users), self.item_tower.embed(items)

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return jnp.sum(self.encode_users(users) * self.encode_items(items), axis=-1)
