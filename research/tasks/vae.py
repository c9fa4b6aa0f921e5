"""Variational autoencoder: a Gaussian encoder, reparameterised samples, beta-weighted ELBO.

The model is an autoencoder built with ``gaussian=True`` (its code is the posterior's
mean and log-variance). The decoder's logits parameterise a Bernoulli per pixel, or the
mean (after a sigmoid) of a Gaussian with a fixed ``sigma``. Everything is in nats
per image, summed over pixels, so the test negative ELBO compares with published
binarized-MNIST numbers (the Flax example: ~104 after 10 epochs; recipe ``mnist_vae``). Training minimises
``reconstruction + beta * kl``; evaluation reports the true (beta = 1) negative ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research.data.base import EVAL_WEIGHT, Dataset
from research.engine.api import Evaluator
from research.errors import ConfigError
from research.evaluators.grids import Grids
from research.evaluators.sums import Sums
from research.tasks.autoencoder import fixed_images, split_model
from research.tasks.base import Batch, Metrics, State, TaskBase, require_fields

DECODERS = ("bernoulli", "gaussian")
NAMES = ("nelbo", "reconstruction", "kl")


def reconstruction_nll(logits: jax.Array, x: jax.Array, decoder: str, sigma: float) -> jax.Array:
    """-log p(x | z) per example, summed over pixels, in nats."""
    axes = tuple(range(1, x.ndim))
    if decoder == "bernoulli":
        return optax.sigmoid_binary_cross_entropy(logits, x).sum(axes)
    z = (x - jax.nn.sigmoid(logits)) / sigma
    return (0.5 * z**2 + math.log(sigma) + 0.5 * math.log(2 * math.pi)).sum(axes)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, in nats."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)


class VAETask(TaskBase):
    """Trains ``model(input_shape=..., gaussian=True, rngs=...)`` on ``batch["image"]`` in [0, 1].

    State: ``{"step", "params", "opt_state", "rng"}``; the sampling noise of each step is
    folded from ``rng`` and the step, so a resumed run draws the same noise.
    """

    metric = "val/nelbo"
    fields = ("image",)

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        decoder: str = "bernoulli",
        sigma: float = 0.1,
        beta: float = 1.0,
        grid_samples: int = 64,
        interpolation_pairs: int = 4,
        interpolation_steps: int = 8,
    ):
        if dataset is None or dataset.input_shape is None or len(dataset.input_shape) != 3:
            raise ConfigError("task=vae needs image data: set data=digits or another image dataset")
        if decoder not in DECODERS:
            raise ConfigError(f"task.decoder={decoder!r} is not one of: {', '.join(DECODERS)}")
        if sigma <= 0 or beta < 0:
            raise ConfigError(f"task.sigma={sigma} must be > 0 and task.beta={beta} >= 0")
        require_fields(self.fields, "vae", dataset)  # before the interpolation pairs are read
        self.model_fn, self.dataset = model, dataset
        self.decoder, self.sigma, self.beta = decoder, float(sigma), float(beta)
        self.tx = make_optimizer(total_steps)
        abstract = nnx.eval_shape(lambda: self._build(jax.random.PRNGKey(0)))
        self.graphdef, self.latent_dim = nnx.graphdef(abstract), abstract.latent_dim
        self.noise = jax.random.normal(jax.random.PRNGKey(0), (grid_samples, self.latent_dim))
        self.pairs = fixed_images(dataset, 2 * interpolation_pairs)
        self.steps = interpolation_steps

    def _build(self, rng: jax.Array) -> nnx.Module:
        return self.model_fn(
            input_shape=tuple(self.dataset.input_shape), gaussian=True, rngs=nnx.Rngs(params=rng)
        )

    def init(self, rng: jax.Array, batch: Batch) -> State:
        model_key, task_key = jax.random.split(rng)
        _, params = split_model(lambda: self._build(model_key))
        return {"step": jnp.int32(0), "params": params, "opt_state": self.tx.init(params), "rng": task_key}

    def terms(self, params: dict, images: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(reconstruction NLL, KL) per example, with one reparameterised sample z = mean + std * eps."""
        model = nnx.merge(self.graphdef, params)
        mean, logvar = jnp.split(model.encode(images), 2, axis=-1)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        return reconstruction_nll(model.decode(z), images, self.decoder, self.sigma), gaussian_kl(
            mean, logvar
        )

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        data_key, z_key = jax.random.split(jax.random.fold_in(state["rng"], state["step"]))
        images = self.dataset.transform(data_key, batch, True)["image"]

        def loss_fn(params: dict) -> tuple[jax.Array, tuple]:
            nll, kl = self.terms(params, images, z_key)
            return jnp.mean(nll + self.beta * kl), (nll.mean(), kl.mean())

        (loss, (nll, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new_state, {"loss": loss, "reconstruction": nll, "kl": kl}

    def eval_sums(self, state: State, batch: Batch) -> Metrics:
        images = self.dataset.transform(state["rng"], batch, False)["image"]
        nll, kl = self.terms(state["params"], images, jax.random.PRNGKey(0))  # the same z noise every pass
        w = batch[EVAL_WEIGHT]
        return {"reconstruction": jnp.sum(nll * w), "kl": jnp.sum(kl * w), "count": w.sum()}

    @staticmethod
    def finalize(sums: Metrics) -> Metrics:
        out = {k: sums[k] / jnp.maximum(sums["count"], 1.0) for k in ("reconstruction", "kl")}
        return {**out, "nelbo": out["reconstruction"] + out["kl"]}

    def grids(self, state: State) -> dict:
        """Samples of the prior's fixed noise, and decodes along lines between pairs of posterior means."""
        model = nnx.merge(self.graphdef, state["params"])
        samples = jax.nn.sigmoid(model.decode(self.noise))
        mean = jnp.split(model.encode(self.pairs), 2, axis=-1)[0]
        start, end = mean[0::2], mean[1::2]
        t = jnp.linspace(0.0, 1.0, self.steps)[None, :, None]
        line = (start[:, None] * (1 - t) + end[:, None] * t).reshape(-1, self.latent_dim)
        return {"samples": samples, "interpolations": jax.nn.sigmoid(model.decode(line))}

    def sample_images(self, state: State, key: jax.Array, count: int) -> jax.Array:
        """``count`` decodes of prior draws, as the decoder's mean in [0, 1] (the per-pixel Bernoulli
        probabilities, not binary draws): what a Frechet distance compares with real images."""
        model = nnx.merge(self.graphdef, state["params"])
        return jax.nn.sigmoid(model.decode(jax.random.normal(key, (count, self.latent_dim))))

    def evaluators(self) -> dict[str, Evaluator]:
        columns = {"samples": int(np.ceil(np.sqrt(len(self.noise)))), "interpolations": self.steps}
        return {"elbo": Sums(self.eval_sums, self.finalize, NAMES), "grids": Grids(self.grids, columns)}
