"""The DQN network: an MLP from flattened observations to one Q-value per action."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx

from research.models.layers import activation as activation_fn


class QNetwork(nnx.Module):
    """``model(obs) -> q_values`` of shape ``(..., num_actions)``.

    The task passes ``obs_shape`` and ``num_actions`` from the environment; the
    config passes the rest (CleanRL's CartPole network is 120-84, relu).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        num_actions: int,
        hidden_sizes: Sequence[int] = (120, 84),
        activation: str = "relu",
        *,
        rngs: nnx.Rngs,
    ):
        self.obs_ndim = len(obs_shape)
        self.activation = activation_fn(activation)
        sizes = [math.prod(tuple(obs_shape)), *(int(h) for h in hidden_sizes)]
        self.hidden = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.head = nnx.Linear(sizes[-1], int(num_actions), rngs=rngs)

    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(*obs.shape[: obs.ndim - self.obs_ndim], -1)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.head(x)
