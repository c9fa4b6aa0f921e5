"""A bag-of-embeddings text baseline (fastText-like): embed tokens, average the real ones, an MLP head.

The baseline that sequence models for text classification must beat; word order is ignored.
Its dense layers are named ``hidden`` as the MLP's, so the same partition rules split them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import jax
from flax import nnx

from research.models.layers import activation as activation_fn
from research.models.layers import check_rate, masked_mean


class EmbedPool(nnx.Module):
    """``model(tokens (B, T) int, mask=None (B, T)) -> (B, num_outputs)``.

    Embed -> mean over real tokens (mask 1) -> [Linear -> activation -> Dropout] per hidden size
    -> Linear head. Padded tokens (mask 0) do not change the output.
    """

    def __init__(
        self,
        vocab_size: int,
        num_outputs: int,
        embed_dim: int,
        hidden_sizes: Sequence[int],
        dropout: float,
        activation: str = "relu",
        *,
        rngs: nnx.Rngs,
    ):
        self.activation = activation_fn(activation)
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
        sizes = [embed_dim, *(int(h) for h in hidden_sizes)]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairwise(sizes)])
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.head = nnx.Linear(sizes[-1], num_outputs, rngs=rngs)

    def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x = self.dropout(masked_mean(self.embed(tokens), mask))
        for layer in self.hidden:
            x = self.dropout(self.activation(layer(x)))
        return self.head(x)
