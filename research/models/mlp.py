"""A multilayer perceptron over flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import jax
from flax import nnx

from research.models.layers import activation as activation_fn
from research.models.layers import check_rate


class MLP(nnx.Module):
    """Flatten -> [Linear -> activation -> Dropout] per hidden size -> Linear to ``num_outputs``.

    Dropout follows NNX modes: active after ``model.train()`` (the default), off after
    ``model.eval()``. The mode is a static attribute, so switching it costs nothing per step.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_sizes: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        self.activation = activation_fn(activation)
        rate = check_rate("dropout", dropout)
        sizes = [math.prod(tuple(input_shape)), *(int(h) for h in hidden_sizes)]
        self.hidden = nnx.List([nnx.Linear(d_in, d_out, rngs=rngs) for d_in, d_out in pairwise(sizes)])
        self.dropout = nnx.Dropout(rate, rngs=rngs)
        self.head = nnx.Linear(sizes[-1], int(num_outputs), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = self.dropout(self.activation(layer(x)))
        return self.head(x)
