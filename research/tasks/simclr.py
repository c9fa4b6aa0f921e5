"""SimCLR: two augmented views of each image, a projection head, the NT-Xent loss.

Both views are made on device inside the step: the data's own train augmentation
(``data.augment``: crops, shifts, flips) drawn twice with different keys, plus Gaussian
pixel noise. The encoder is any image model called like a classifier
(``model(input_shape, num_outputs=feature_dim)``); the head maps its features to the
space where the loss compares views. The representation is judged by a linear probe
on the encoder's features (research/evaluators/linear_probe.py), next to the same probe
on a randomly initialised encoder and on raw pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research.data.base import Dataset
from research.engine.api import Evaluator
from research.errors import ConfigError
from research.evaluators.linear_probe import LinearProbe
from research.tasks.base import Batch, Metrics, State, TaskBase, require_fields

# What the probe reads: the encoder's output, or what its last layer reads (``features()``).
PROBE_FEATURES = ("output", "penultimate")


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
    """Normalised-temperature cross-entropy: each view must pick its pair among the other 2B - 1."""
    z = jnp.concatenate([z1, z2])
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    logits = (z @ z.T) / temperature
    n = z1.shape[0]
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    pairs = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    return optax.softmax_cross_entropy_with_integer_labels(logits, pairs).mean()


class SimCLRTask(TaskBase):
    """State: ``{"step", "params" ({"encoder", "head"}), "model_state", "opt_state", "rng"}``."""

    metric, metric_mode = "val/probe_accuracy", "max"
    fields = ("image", "label")  # the probe reads labels

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        feature_dim: int = 128,
        projection_dim: int = 64,
        temperature: float = 0.5,
        noise_std: float = 0.0,
        probe_examples: int = 1000,
        probe_steps: int = 100,
        probe_l2: float = 1e-3,
        probe_features: str = "output",
    ):
        if dataset is None or not dataset.num_classes or len(dataset.input_shape or ()) != 3:
            raise ConfigError(
                "task=simclr needs labelled image data (the probe reads labels): e.g. data=digits"
            )
        if temperature <= 0:
            raise ConfigError(f"task.temperature={temperature} must be > 0")
        require_fields(self.fields, "simclr", dataset)  # before the probe's examples are read
        self.model_fn, self.dataset = model, dataset
        self.feature_dim, self.projection_dim = int(feature_dim), int(projection_dim)
        self.temperature, self.noise_std = float(temperature), float(noise_std)
        self.tx = make_optimizer(total_steps)
        abstract = nnx.eval_shape(lambda: self._build(jax.random.PRNGKey(0)))
        self.graphdef = nnx.graphdef(abstract)
        if probe_features not in PROBE_FEATURES:
            raise ConfigError(f"task.probe_features={probe_features!r}: choose {' or '.join(PROBE_FEATURES)}")
        if probe_features == "penultimate" and not hasattr(abstract["encoder"], "features"):
            raise ConfigError(
                f"task.probe_features=penultimate: model {type(abstract['encoder']).__name__} has no "
                "penultimate features; use task.probe_features=output or model=cnn"
            )
        self.probe_features = probe_features
        abstract.eval()  # the probe reads features with running batch-norm statistics, no dropout
        self.eval_graphdef = nnx.graphdef(abstract)
        train = {k: jnp.asarray(v[:probe_examples]) for k, v in dataset.splits["train"].arrays().items()}
        self.probe_train = (train["image"], self.labels(train))
        self.probe_settings = {
            "num_classes": dataset.num_classes,
            "steps": probe_steps,
            "l2": probe_l2,
        }

    def _build(self, rng: jax.Array) -> nnx.Module:
        keys = nnx.Rngs(params=rng, dropout=jax.random.fold_in(rng, 1))
        encoder = self.model_fn(
            input_shape=tuple(self.dataset.input_shape), num_outputs=self.feature_dim, rngs=keys
        )
        head = nnx.Sequential(
            nnx.Linear(self.feature_dim, self.feature_dim, rngs=keys), nnx.relu,
            nnx.Linear(self.feature_dim, self.projection_dim, rngs=keys),
        )  # fmt: skip
        return nnx.Dict(encoder=encoder, head=head)

    def init(self, rng: jax.Array, batch: Batch) -> State:
        model_key, task_key = jax.random.split(rng)
        _, params, rest = nnx.split(self._build(model_key), nnx.Param, ...)
        params = nnx.to_pure_dict(params)
        return {"step": jnp.int32(0), "params": params, "model_state": nnx.to_pure_dict(rest),
                "opt_state": self.tx.init(params), "rng": task_key}  # fmt: skip

    def views(self, key: jax.Array, batch: Batch) -> jax.Array:
        """Two augmented, noised views of the batch, stacked: (2B, H, W, C)."""
        keys = jax.random.split(key, 4)
        one, two = (self.dataset.transform(k, batch, True)["image"] for k in keys[:2])
        views = jnp.concatenate([one, two])
        noise = jax.random.normal(keys[2], views.shape)
        return views + self.noise_std * noise if self.noise_std else views

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        views = self.views(jax.random.fold_in(state["rng"], state["step"]), batch)

        def loss_fn(params: dict) -> tuple[jax.Array, dict]:
            model = nnx.merge(self.graphdef, params, state["model_state"])
            z = model["head"](model["encoder"](views))
            _, rest = nnx.state(model, nnx.Param, ...)
            return nt_xent(*jnp.split(z, 2), self.temperature), nnx.to_pure_dict(rest)

        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {
            **state,
            "step": state["step"] + 1,
            "params": params,
            "model_state": model_state,
            "opt_state": opt_state,
        }
        return new, {"loss": loss}

    def pixels(self, raw: jax.Array) -> jax.Array:
        return self.dataset.transform(jax.random.PRNGKey(0), {"image": raw}, False)["image"]

    def labels(self, raw: Batch) -> jax.Array:
        """The probe's targets: stored labels as the transform maps them (data.classes renumbers)."""
        return self.dataset.transform(jax.random.PRNGKey(0), raw, False)["label"]

    def features(self, state: State, raw: jax.Array) -> jax.Array:
        """What the probe reads for raw images: the encoder's output (before the projection head),
        or with ``probe_features=penultimate`` the activations its last layer reads (SimCLR's h
        when that layer is taken as the first of the projection)."""
        encoder = nnx.merge(self.eval_graphdef, state["params"], state["model_state"])["encoder"]
        images = self.pixels(raw)
        return encoder.features(images) if self.probe_features == "penultimate" else encoder(images)

    def evaluators(self) -> dict[str, Evaluator]:
        fresh = self.init(jax.random.PRNGKey(12345), None)
        baselines = {
            "random_encoder": lambda raw: self.features(fresh, raw),
            "raw_pixel": lambda raw: self.pixels(raw).reshape(raw.shape[0], -1),
        }
        settings = {**self.probe_settings, "baselines": baselines, "labels": self.labels}
        return {"probe": LinearProbe(self.features, *self.probe_train, **settings)}
