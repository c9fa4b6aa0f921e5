"""The PPO network: separate actor and critic MLPs, and the action distributions it outputs.

Same layout and initialisation as PureJaxRL and CleanRL: orthogonal weights with
gain sqrt(2) in the hidden layers, 0.01 on the policy head (a near-uniform first
policy) and 1.0 on the value head, zero biases. Discrete actions get a categorical
over logits; continuous ones a diagonal Gaussian with a learned, state-independent
log standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from research.models.layers import activation as activation_fn

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0


class Categorical(NamedTuple):
    logits: jax.Array

    @staticmethod
    def noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Gumbel noise: ``sample_from`` turns it into a sample (the Gumbel-max trick)."""
        return jax.random.gumbel(key, shape)

    def sample_from(self, noise: jax.Array) -> jax.Array:
        return jnp.argmax(self.logits + noise, axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.sample_from(self.noise(key, self.logits.shape))

    def log_prob(self, action: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return -(jnp.exp(logp) * logp).sum(-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)


class DiagGaussian(NamedTuple):
    mean: jax.Array
    log_std: jax.Array  # broadcast against mean

    @staticmethod
    def noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Standard normal noise: ``sample_from`` scales and shifts it into a sample."""
        return jax.random.normal(key, shape)

    def sample_from(self, noise: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(self.log_std) * noise

    def sample(self, key: jax.Array) -> jax.Array:
        return self.sample_from(self.noise(key, self.mean.shape))

    def log_prob(self, action: jax.Array) -> jax.Array:
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return (-0.5 * jnp.square(z) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> jax.Array:
        per_dim = self.log_std + 0.5 * (1.0 + math.log(2 * math.pi))
        return jnp.broadcast_to(per_dim, self.mean.shape).sum(-1)

    def mode(self) -> jax.Array:
        return self.mean


def _mlp(sizes: Sequence[int], head: int, head_gain: float, rngs: nnx.Rngs) -> nnx.List:
    layers = [
        nnx.Linear(d_in, d_out, kernel_init=nnx.initializers.orthogonal(HIDDEN_GAIN), rngs=rngs)
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    layers.append(nnx.Linear(sizes[-1], head, kernel_init=nnx.initializers.orthogonal(head_gain), rngs=rngs))
    return nnx.List(layers)


class ActorCritic(nnx.Module):
    """``model(obs) -> (distribution, value)`` over flattened observations.

    The task passes ``obs_shape``, ``action_dim`` and ``continuous`` from the
    environment; the config passes the rest.
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_dim: int,
        continuous: bool = False,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        self.obs_ndim = len(obs_shape)
        self.activation = activation_fn(activation)
        sizes = [math.prod(tuple(obs_shape)), *(int(h) for h in hidden_sizes)]
        self.actor = _mlp(sizes, int(action_dim), POLICY_GAIN, rngs)
        self.critic = _mlp(sizes, 1, VALUE_GAIN, rngs)
        self.continuous, self.action_dim = continuous, int(action_dim)
        if continuous:
            self.log_std = nnx.Param(jnp.full((int(action_dim),), log_std_init, jnp.float32))

    def action_noise(self, key: jax.Array, batch_shape: tuple[int, ...]) -> jax.Array:
        """Noise for ``batch_shape`` future samples, drawn at once (one RNG call for a whole rollout)."""
        dist = DiagGaussian if self.continuous else Categorical
        return dist.noise(key, (*batch_shape, self.action_dim))

    def _forward(self, layers: nnx.List, x: jax.Array) -> jax.Array:
        for layer in layers[:-1]:
            x = self.activation(layer(x))
        return layers[-1](x)

    def __call__(self, obs: jax.Array) -> tuple[Categorical | DiagGaussian, jax.Array]:
        x = obs.reshape(*obs.shape[: obs.ndim - self.obs_ndim], -1)
        out = self._forward(self.actor, x)
        value = self._forward(self.critic, x)[..., 0]
        if self.continuous:
            return DiagGaussian(out, self.log_std[...]), value
        return Categorical(out), value
