"""Semantic segmentation: a class per pixel, per-pixel cross-entropy (or Dice), mean and per-class IoU.

The data gives ``image`` (B, H, W, C) and ``mask`` (B, H, W) integer classes; the model
(research/models/unet.py) maps images to (B, H, W, classes) logits. Evaluation sums one
pixel confusion matrix over the split, from which come pixel accuracy, the IoU of every
class and their mean over the classes present (``metrics.mean_iou``); the final evaluation
also draws the per-class IoU as a table, and every evaluation draws fixed validation
images beside their true and predicted masks as colour overlays.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research import images
from research import metrics as metrics_lib
from research import precision as precision_lib
from research.data.base import EVAL_WEIGHT, Dataset
from research.engine.api import Evaluator
from research.errors import ConfigError, DataError
from research.evaluators.grids import Grids
from research.evaluators.sums import Sums
from research.tasks.base import Batch, Metrics, State, require_fields
from research.tasks.supervised import SupervisedTask

LOSSES = ("cross_entropy", "dice", "cross_entropy+dice")
METRICS = ("loss", "pixel_accuracy", "mean_iou", "per_class_iou")


def check_masks(dataset: Dataset) -> None:
    """A DataError naming the split whose masks are not of their images' height and width."""
    for name, split in dataset.splits.items():
        if not split.in_memory:
            continue
        arrays = split.arrays()
        image, mask = arrays["image"].shape, arrays["mask"].shape
        if mask[1:3] != image[1:3] or len(mask) != 3:
            raise DataError(
                f"data={dataset.name}: the {name} masks are {'x'.join(map(str, mask[1:]))} but the images "
                f"{'x'.join(map(str, image[1:3]))}: give each image an (H, W) mask of its own size"
            )


def palette(num_classes: int) -> np.ndarray:
    """(classes, 3) colours in [0, 1]: class 0 black, the rest evenly spaced hues."""
    hues = [colorsys.hsv_to_rgb(i / max(num_classes - 1, 1), 0.9, 1.0) for i in range(num_classes - 1)]
    return np.asarray([(0.0, 0.0, 0.0), *hues], np.float32)


def dice_loss(logits: jax.Array, masks: jax.Array, smooth: float) -> jax.Array:
    """1 - the mean over classes of soft Dice, ``(2 |P.G| + s) / (|P| + |G| + s)``, over the batch."""
    probs = jax.nn.softmax(logits, -1)
    truth = jax.nn.one_hot(masks, logits.shape[-1])
    axes = tuple(range(logits.ndim - 1))
    overlap = (probs * truth).sum(axes)
    dice = (2 * overlap + smooth) / (probs.sum(axes) + truth.sum(axes) + smooth)
    return 1.0 - dice.mean()


class SegmentationTask(SupervisedTask):
    """Trains ``model(input_shape=..., num_outputs=classes, rngs=...)`` on ``image`` -> ``mask``."""

    metric, metric_mode = "val/mean_iou", "max"
    fields = ("image", "mask")

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        loss: str = "cross_entropy",
        dice_smooth: float = 1.0,
        overlay_images: int = 8,
        overlay_alpha: float = 0.5,
        precision: precision_lib.Policy | None = None,
    ):
        if dataset is None or dataset.num_classes is None or dataset.input_shape is None:
            raise ConfigError(
                "task=segmentation needs images with class masks: set data=fashion_mnist_scenes"
            )
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r} is not one of: {', '.join(LOSSES)}")
        if dice_smooth <= 0 or not 0 <= overlay_alpha <= 1 or overlay_images < 1:
            raise ConfigError(
                "task.dice_smooth must be > 0, task.overlay_alpha in [0, 1], task.overlay_images >= 1"
            )
        require_fields(self.fields, "segmentation", dataset)
        check_masks(dataset)
        self.num_classes, self.loss_kind, self.dice_smooth = dataset.num_classes, loss, float(dice_smooth)
        kwargs = {"input_shape": tuple(dataset.input_shape), "num_outputs": self.num_classes}
        super().__init__(model, make_optimizer, total_steps, dataset, kwargs, precision)
        raw = {k: v[:overlay_images] for k, v in dataset.splits["val"].arrays().items()}
        fixed = dataset.transform(jax.random.PRNGKey(0), raw, False)
        self.overlay_inputs, self.overlay_masks = (
            jnp.asarray(fixed["image"]),
            jnp.asarray(fixed["mask"], jnp.int32),
        )
        self.palette, self.alpha = jnp.asarray(palette(self.num_classes)), float(overlay_alpha)

    def losses(self, logits: jax.Array, masks: jax.Array) -> jax.Array:
        """Per-image loss: mean per-pixel cross-entropy, the batch's Dice loss, or their sum."""
        per_image = jnp.zeros(logits.shape[0])
        if self.loss_kind != "dice":
            per_image += optax.softmax_cross_entropy_with_integer_labels(logits, masks).mean((1, 2))
        if self.loss_kind != "cross_entropy":
            per_image += dice_loss(logits, masks, self.dice_smooth)
        return per_image

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        logits = self.precision.cast_output(model(batch["image"]))
        masks = batch["mask"].astype(jnp.int32)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == masks)
        return self.losses(logits, masks).mean(), {"pixel_accuracy": accuracy}

    def pixel_logits(self, state: State, images: jax.Array) -> jax.Array:
        """Eval-mode (B, H, W, classes) logits of transformed images."""
        return self.precision.cast_output(self.eval_model(state)(images))

    def eval_step(self, state: State, batch: Batch) -> Metrics:
        batch = self.dataset.transform(state["rng"], batch, False)
        logits, masks = self.pixel_logits(state, batch["image"]), batch["mask"].astype(jnp.int32)
        weight = batch[EVAL_WEIGHT].astype(jnp.float32)
        pixels = jnp.broadcast_to(weight[:, None, None], masks.shape)
        confusion = metrics_lib.confusion_matrix(
            masks.ravel(), jnp.argmax(logits, -1).ravel(), self.num_classes, pixels.ravel()
        )
        return {
            "loss_sum": jnp.sum(self.losses(logits, masks) * weight),
            "count": weight.sum(),
            "confusion": confusion,
        }

    def finalize(self, sums: Metrics) -> Metrics:
        confusion = sums["confusion"]
        return {
            "loss": metrics_lib.safe_divide(sums["loss_sum"], sums["count"]),
            "pixel_accuracy": metrics_lib.safe_divide(jnp.trace(confusion), confusion.sum()),
            "mean_iou": metrics_lib.mean_iou(confusion),
            "per_class_iou": metrics_lib.iou_per_class(confusion),
        }

    def overlay(self, grey: jax.Array, masks: jax.Array) -> jax.Array:
        """(B, H, W, 3) in [0, 1]: the image in grey, the mask's class colours blended over it."""
        return (1 - self.alpha) * grey + self.alpha * self.palette[masks]

    def overlays(self, state: State) -> dict:
        """Rows: the fixed images, their true masks, the predicted masks."""
        x = self.overlay_inputs.mean(-1, keepdims=True)
        low, high = x.min((1, 2, 3), keepdims=True), x.max((1, 2, 3), keepdims=True)
        grey = jnp.repeat((x - low) / jnp.maximum(high - low, 1e-6), 3, -1)
        predicted = jnp.argmax(self.pixel_logits(state, self.overlay_inputs), -1)
        rows = [grey, self.overlay(grey, self.overlay_masks), self.overlay(grey, predicted)]
        return {"overlays": jnp.concatenate(rows)}

    def evaluators(self) -> dict[str, Evaluator]:
        return {
            "metrics": Sums(self.eval_step, self.finalize, METRICS, report=self.iou_table),
            "overlays": Grids(self.overlays, {"overlays": len(self.overlay_inputs)}),
        }

    def iou_table(self, metrics: dict) -> dict:
        """The final per-class IoU as a table image (several seeds: their mean)."""
        plt = images.pyplot()
        iou = np.asarray(metrics["per_class_iou"]).reshape(-1, self.num_classes).mean(0)
        names = self.dataset.class_names or [str(i) for i in range(self.num_classes)]
        fig, ax = plt.subplots(figsize=(4, 0.6 + 0.28 * self.num_classes), dpi=100)
        ax.axis("off")
        ax.table(cellText=[[f"{v:.3f}"] for v in iou], rowLabels=names, colLabels=["IoU"], loc="center")
        ax.set_title(f"mean IoU {float(np.mean(metrics['mean_iou'])):.3f}")
        fig.tight_layout()
        return {"per_class_iou": images.figure_array(fig)}
