"""GAN: a generator and a discriminator, each with its own optimizer, updated in turn in one step.

State: ``{"step", "generator", "discriminator" (parameters), "g_opt_state", "d_opt_state",
"rng"}``: both optimizers' moments are checkpointed with the rest, so a resumed run
continues exactly. Each step draws noise from ``rng`` folded with the step, updates the
discriminator on real and fake images, then the generator against the updated
discriminator. Images are pixels in [0, 1] (the generator's logits through a sigmoid).
``r1_gamma`` > 0 adds the R1 penalty (Mescheder et al. 2018), gamma/2 times the squared
gradient of the discriminator's logit at real images: without it (and without batch norm,
which these models do not have) the discriminator of ``digits_dcgan`` won within 400 steps
and the generator never recovered.
With ``conditional`` the class label (one-hot) joins the generator's noise and the
discriminator's input planes. There is no validation loss for a GAN: the metric is the
step (the latest state is the one kept), and quality is judged by the sample grid.
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
from research.evaluators.grids import Grids
from research.tasks.autoencoder import split_model
from research.tasks.base import Batch, Metrics, State, TaskBase

LOSSES = ("non_saturating", "hinge")


def d_losses(real: jax.Array, fake: jax.Array, loss: str) -> jax.Array:
    """The discriminator's loss on real and fake logits, per example."""
    if loss == "hinge":
        return jax.nn.relu(1.0 - real) + jax.nn.relu(1.0 + fake)
    return jax.nn.softplus(-real) + jax.nn.softplus(fake)  # -log D(real) - log(1 - D(fake))


def g_losses(fake: jax.Array, loss: str) -> jax.Array:
    """The generator's loss on fake logits: -log D(fake) (non-saturating) or -D(fake) (hinge)."""
    return -fake if loss == "hinge" else jax.nn.softplus(-fake)


class GANTask(TaskBase):
    """``models.generator(input_dim, output_shape)`` against ``models.discriminator(input_shape)``."""

    metric, metric_mode = "eval/step", "max"
    finite = ("d_loss", "g_loss")
    reusable = trainable = ("generator", "discriminator")
    optimized = (("generator", "g_opt_state"), ("discriminator", "d_opt_state"))

    def __init__(
        self,
        models: dict[str, Callable[..., nnx.Module]],
        optimizers: dict[str, Callable[[int], optax.GradientTransformation]],
        total_steps: int,
        dataset: Dataset,
        noise_dim: int = 64,
        loss: str = "non_saturating",
        conditional: bool = False,
        grid_rows: int = 8,
        r1_gamma: float = 0.0,
    ):
        if dataset is None or dataset.input_shape is None or len(dataset.input_shape) != 3:
            raise ConfigError("task=gan needs image data: set data=digits or another image dataset")
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r} is not one of: {', '.join(LOSSES)}")
        if conditional and not dataset.num_classes:
            raise ConfigError(
                f"task.conditional=true needs labelled data; data={dataset.name} has no classes"
            )
        if not r1_gamma >= 0:
            raise ConfigError(f"task.r1_gamma={r1_gamma} must be >= 0 (0 turns the R1 penalty off)")
        self.fields = ("image", "label") if conditional else ("image",)
        self.models, self.dataset, self.loss, self.r1_gamma = models, dataset, loss, float(r1_gamma)
        self.noise_dim, self.classes = int(noise_dim), (dataset.num_classes if conditional else 0)
        self.g_tx, self.d_tx = optimizers["generator"](total_steps), optimizers["discriminator"](total_steps)
        key = jax.random.PRNGKey(0)
        self.g_def = nnx.graphdef(nnx.eval_shape(lambda: self._generator(key)))
        self.d_def = nnx.graphdef(nnx.eval_shape(lambda: self._discriminator(key)))
        # A fixed noise batch for the grid: one row per class when conditional.
        columns = self.classes or grid_rows
        self.grid_noise = jax.random.normal(key, (grid_rows * columns, self.noise_dim))
        self.grid_labels = jnp.arange(grid_rows * columns) % columns if self.classes else None
        self.columns = columns

    def _generator(self, rng: jax.Array) -> nnx.Module:
        shape = tuple(self.dataset.input_shape)
        return self.models["generator"](
            input_dim=self.noise_dim + self.classes, output_shape=shape, rngs=nnx.Rngs(params=rng)
        )

    def _discriminator(self, rng: jax.Array) -> nnx.Module:
        h, w, c = self.dataset.input_shape
        return self.models["discriminator"](input_shape=(h, w, c + self.classes), rngs=nnx.Rngs(params=rng))

    def init(self, rng: jax.Array, batch: Batch) -> State:
        g_key, d_key, task_key = jax.random.split(rng, 3)
        _, g = split_model(lambda: self._generator(g_key))
        _, d = split_model(lambda: self._discriminator(d_key))
        return {
            "step": jnp.int32(0), "generator": g, "discriminator": d,
            "g_opt_state": self.g_tx.init(g), "d_opt_state": self.d_tx.init(d), "rng": task_key,
        }  # fmt: skip

    def generate(self, g: dict, noise: jax.Array, labels: jax.Array | None) -> jax.Array:
        if self.classes:
            noise = jnp.concatenate([noise, jax.nn.one_hot(labels, self.classes)], -1)
        return jax.nn.sigmoid(nnx.merge(self.g_def, g)(noise))

    def sample_classes(self, state: State, labels: jax.Array, key: jax.Array) -> jax.Array:
        """Images in [0, 1] of the given classes from fresh noise: what ``research.generate`` writes."""
        noise = jax.random.normal(key, (labels.shape[0], self.noise_dim))
        return self.generate(state["generator"], noise, labels if self.classes else None)

    def discriminate(self, d: dict, images: jax.Array, labels: jax.Array | None) -> jax.Array:
        if self.classes:
            planes = jnp.broadcast_to(
                jax.nn.one_hot(labels, self.classes)[:, None, None], (*images.shape[:3], self.classes)
            )
            images = jnp.concatenate([images, planes], -1)
        return nnx.merge(self.d_def, d)(images)[:, 0]

    def r1_penalty(self, d: dict, real: jax.Array, labels: jax.Array | None) -> jax.Array:
        """Mean over the batch of |d logit / d image|^2 at the real images."""
        grads = jax.grad(lambda x: self.discriminate(d, x, labels).sum())(real)
        return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        data_key, d_noise, g_noise = jax.random.split(jax.random.fold_in(state["rng"], state["step"]), 3)
        batch = self.dataset.transform(data_key, batch, True)
        real, labels = batch["image"], batch.get("label") if self.classes else None
        shape = (real.shape[0], self.noise_dim)
        fake = jax.lax.stop_gradient(
            self.generate(state["generator"], jax.random.normal(d_noise, shape), labels)
        )

        def d_loss_fn(d: dict) -> tuple[jax.Array, tuple]:
            r, f = self.discriminate(d, real, labels), self.discriminate(d, fake, labels)
            loss = d_losses(r, f, self.loss).mean()
            if self.r1_gamma:
                loss = loss + self.r1_gamma / 2 * self.r1_penalty(d, real, labels)
            return loss, (jnp.mean(r > 0), jnp.mean(f < 0))

        (d_loss, (real_acc, fake_acc)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state["discriminator"]
        )
        d_updates, d_opt = self.d_tx.update(d_grads, state["d_opt_state"], state["discriminator"])
        d = optax.apply_updates(state["discriminator"], d_updates)

        def g_loss_fn(g: dict) -> jax.Array:
            images = self.generate(g, jax.random.normal(g_noise, shape), labels)
            return g_losses(self.discriminate(d, images, labels), self.loss).mean()

        g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state["generator"])
        g_updates, g_opt = self.g_tx.update(g_grads, state["g_opt_state"], state["generator"])
        g = optax.apply_updates(state["generator"], g_updates)
        new_state = {**state, "step": state["step"] + 1, "generator": g, "discriminator": d,
                     "g_opt_state": g_opt, "d_opt_state": d_opt}  # fmt: skip
        metrics = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real_accuracy": real_acc,
            "d_fake_accuracy": fake_acc,
        }
        return new_state, metrics

    def samples(self, state: State) -> dict:
        """The fixed noise batch through the generator; ``step`` names the state it came from."""
        return {
            "samples": self.generate(state["generator"], self.grid_noise, self.grid_labels),
            "step": state["step"],
        }

    def sample_images(self, state: State, key: jax.Array, count: int) -> jax.Array:
        """``count`` fresh samples in [0, 1] (uniformly drawn classes when conditional): what a
        Frechet distance (research/evaluators/frechet.py) compares with real images."""
        noise_key, label_key = jax.random.split(key)
        labels = jax.random.randint(label_key, (count,), 0, self.classes) if self.classes else None
        noise = jax.random.normal(noise_key, (count, self.noise_dim))
        return self.generate(state["generator"], noise, labels)

    def evaluators(self) -> dict[str, Evaluator]:
        return {"samples": Grids(self.samples, {"samples": self.columns}, names=("step",))}
