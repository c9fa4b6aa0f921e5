"""Autoencoders: reconstruction loss, optional denoising, and one-class anomaly detection.

The model is ``encode``/``decode`` (research/models/autoencoder.py); the decoder's
logits pass through a sigmoid, so pixels are expected in [0, 1] (recipes set
``data.normalize`` to mean 0, std 1). With ``normal_class`` set, training uses only
that class (the other rows of each batch are masked out, so the data keeps every class
and the validation and test splits score all of them): the anomaly score of an
image is its reconstruction error, and ROC AUC (anomalies positive) is the metric.

With ``noise`` set (``research.data.transforms.Noise``: Gaussian, salt and pepper,
masking), training corrupts each batch on device and learns to give back the clean
image; evaluation corrupts every split the same way (a fixed key, so every evaluation
sees the same noise) and reports PSNR and SSIM of the noisy and of the denoised images
against the clean ones, their PSNR gain (the metric), and noisy / denoised / clean grids.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.metrics import roc_auc_score

from research import metrics as metrics_lib
from research.data.base import EVAL_WEIGHT, Dataset
from research.data.transforms import Noise, add_noise
from research.engine.api import Evaluator, Result
from research.errors import ConfigError
from research.evaluators.collect import Collect
from research.evaluators.grids import Grids
from research.evaluators.sums import Sums
from research.tasks.base import Batch, Metrics, State, TaskBase, require_fields

LOSSES = ("mse", "bce")
DENOISING = ("psnr_noisy", "psnr_denoised", "psnr_gain", "ssim_noisy", "ssim_denoised")


def split_model(build: Callable[[], nnx.Module]) -> tuple[nnx.GraphDef, dict]:
    """(static graphdef, parameters as a plain dict) of a model made only of ``nnx.Param``s."""
    graphdef, params = nnx.split(build(), nnx.Param)
    return graphdef, nnx.to_pure_dict(params)


def fixed_images(dataset: Dataset, count: int) -> jax.Array:
    """The first ``count`` validation images, normalised: the grids' fixed inputs."""
    raw = {k: v[:count] for k, v in dataset.splits["val"].arrays().items()}
    return jnp.asarray(dataset.transform(jax.random.PRNGKey(0), raw, False)["image"])


def pixel_losses(logits: jax.Array, target: jax.Array, loss: str) -> jax.Array:
    """Per-example reconstruction error, the mean over pixels: squared error of the sigmoid, or BCE."""
    axes = tuple(range(1, logits.ndim))
    if loss == "bce":
        return optax.sigmoid_binary_cross_entropy(logits, target).mean(axes)
    return jnp.square(jax.nn.sigmoid(logits) - target).mean(axes)


def roc_auc(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """ROC AUC of ``scores`` against ``anomalous`` (positive); NaN when a split holds one kind only."""
    if anomalous.all() or not anomalous.any():
        return float("nan")
    return float(roc_auc_score(anomalous, scores))


class AutoencoderTask(TaskBase):
    """Trains ``model(input_shape=..., rngs=...)`` to reconstruct ``batch["image"]``.

    State: ``{"step", "params", "opt_state", "rng"}``. ``noise`` other than ``none`` trains a
    denoising autoencoder (``noise_amount`` of that noise on the input, the clean image the
    target); ``noise_seed`` fixes the evaluation's noise.
    """

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        loss: str = "mse",
        noise: str = "none",
        noise_amount: float = 0.0,
        noise_seed: int = 0,
        normal_class: int | None = None,
        grid_images: int = 16,
    ):
        if dataset is None or dataset.input_shape is None or len(dataset.input_shape) != 3:
            raise ConfigError("task=autoencoder needs image data: set data=digits or another image dataset")
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r} is not one of: {', '.join(LOSSES)}")
        if normal_class is not None and not 0 <= normal_class < (dataset.num_classes or 0):
            raise ConfigError(
                f"task.normal_class={normal_class} must be a label in [0, {dataset.num_classes})"
            )
        self.fields = ("image",) if normal_class is None else ("image", "label")
        require_fields(self.fields, "autoencoder", dataset)  # before the grid images are read
        self.model_fn, self.dataset, self.loss = model, dataset, loss
        self.noise, self.normal_class = Noise(noise, float(noise_amount)), normal_class
        self.eval_noise_key = jax.random.PRNGKey(noise_seed)
        self.tx = make_optimizer(total_steps)
        self.graphdef = nnx.graphdef(nnx.eval_shape(lambda: self._build(jax.random.PRNGKey(0))))
        self.grid_inputs = fixed_images(dataset, grid_images)
        if normal_class is not None:
            self.metric, self.metric_mode = "val/roc_auc", "max"
        elif self.denoising:
            self.metric, self.metric_mode = "val/psnr_denoised", "max"

    @property
    def denoising(self) -> bool:
        return self.noise.kind != "none"

    def _build(self, rng: jax.Array) -> nnx.Module:
        return self.model_fn(input_shape=tuple(self.dataset.input_shape), rngs=nnx.Rngs(params=rng))

    def init(self, rng: jax.Array, batch: Batch) -> State:
        model_key, task_key = jax.random.split(rng)
        _, params = split_model(lambda: self._build(model_key))
        return {"step": jnp.int32(0), "params": params, "opt_state": self.tx.init(params), "rng": task_key}

    def reconstruct(self, params: dict, images: jax.Array) -> jax.Array:
        model = nnx.merge(self.graphdef, params)
        return model.decode(model.encode(images))

    def normal_weight(self, batch: Batch) -> jax.Array:
        """1 for the examples training uses (all, or the normal class), else 0."""
        if self.normal_class is None:
            return jnp.ones(batch["image"].shape[0])
        return (batch["label"] == self.normal_class).astype(jnp.float32)

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        data_key, noise_key = jax.random.split(jax.random.fold_in(state["rng"], state["step"]))
        batch = self.dataset.transform(data_key, batch, True)
        clean = batch["image"]
        noisy = add_noise(noise_key, clean, self.noise)
        weight = self.normal_weight(batch)

        def loss_fn(params: dict) -> jax.Array:
            losses = pixel_losses(self.reconstruct(params, noisy), clean, self.loss)
            return jnp.sum(losses * weight) / jnp.maximum(weight.sum(), 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}, {"loss": loss}

    def scores(self, state: State, batch: Batch) -> jax.Array:
        """Per-example reconstruction error of clean inputs: the loss, and the anomaly score."""
        images = self.dataset.transform(state["rng"], batch, False)["image"]
        return pixel_losses(self.reconstruct(state["params"], images), images, self.loss)

    def eval_sums(self, state: State, batch: Batch) -> Metrics:
        weight = batch[EVAL_WEIGHT] * self.normal_weight(batch)
        return {"loss": jnp.sum(self.scores(state, batch) * weight), "count": weight.sum()}

    def grids(self, state: State) -> dict:
        if self.denoising:
            noisy = add_noise(self.eval_noise_key, self.grid_inputs, self.noise)
            denoised = jax.nn.sigmoid(self.reconstruct(state["params"], noisy))
            return {"denoising": jnp.concatenate([noisy, denoised, self.grid_inputs])}
        recon = jax.nn.sigmoid(self.reconstruct(state["params"], self.grid_inputs))
        return {"reconstructions": jnp.concatenate([self.grid_inputs, recon])}

    def denoising_sums(self, state: State, batch: Batch) -> Metrics:
        """Sums of per-image PSNR and SSIM (against the clean image) of the noisy and the denoised."""
        clean = self.dataset.transform(state["rng"], batch, False)["image"]
        noisy = add_noise(self.eval_noise_key, clean, self.noise)
        denoised = jax.nn.sigmoid(self.reconstruct(state["params"], noisy))
        weight = batch[EVAL_WEIGHT]
        sums = {"count": weight.sum()}
        for name, images in (("noisy", noisy), ("denoised", denoised)):
            sums[f"psnr_{name}"] = jnp.sum(metrics_lib.psnr(images, clean) * weight)
            sums[f"ssim_{name}"] = jnp.sum(metrics_lib.ssim(images, clean) * weight)
        return sums

    @staticmethod
    def denoising_means(sums: Metrics) -> Metrics:
        means = {k: v / jnp.maximum(sums["count"], 1.0) for k, v in sums.items() if k != "count"}
        return {**means, "psnr_gain": means["psnr_denoised"] - means["psnr_noisy"]}

    def evaluators(self) -> dict[str, Evaluator]:
        out: dict[str, Evaluator] = {
            "loss": Sums(
                self.eval_sums, lambda s: {"loss": s["loss"] / jnp.maximum(s["count"], 1.0)}, ("loss",)
            ),
            "grids": Grids(
                self.grids, {"denoising" if self.denoising else "reconstructions": len(self.grid_inputs)}
            ),
        }
        if self.denoising:
            out["denoising"] = Sums(self.denoising_sums, self.denoising_means, DENOISING)
        if self.normal_class is not None:
            outputs = lambda state, batch: {"score": self.scores(state, batch), "label": batch["label"]}  # noqa: E731
            out["anomaly"] = Collect(outputs, self.anomaly_report, ("roc_auc",))
        return out

    def anomaly_report(self, arrays: dict[str, np.ndarray]) -> Result:
        return Result({"roc_auc": np.float32(roc_auc(arrays["score"], arrays["label"] != self.normal_class))})
