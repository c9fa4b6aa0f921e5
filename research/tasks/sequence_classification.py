"""Sequence classification: token ids (with a padding ``mask``) or float sequences -> a label.

Image classification (research/tasks/classification.py) feeds ``batch["image"]`` to
``model(input_shape=, num_outputs=)``; text and time series need the vocabulary, the padded
length and the mask instead. So this task reads ``batch[inputs]`` (``tokens`` by default,
``x`` for float sequences) and calls ``model(x, mask=batch["mask"])`` when the data has a
mask. The model gets whichever of ``vocab_size`` (data info), ``max_len`` (the padded
length), ``input_shape`` and ``num_outputs`` its constructor takes. Metrics are
classification's: loss, accuracy, macro precision/recall/F1 and the confusion matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax
from flax import nnx

from research import images
from research import metrics as metrics_lib
from research import precision as precision_lib
from research.data.base import EVAL_WEIGHT, Dataset
from research.engine.api import Evaluator
from research.errors import ConfigError
from research.evaluators.sums import Sums
from research.tasks.base import Batch, Metrics, State, require_fields
from research.tasks.classification import METRICS
from research.tasks.supervised import SupervisedTask, train_arrays


class SequenceClassificationTask(SupervisedTask):
    """Cross-entropy on ``label`` from ``model(batch[inputs], mask=batch.get("mask"))``."""

    metric, metric_mode = "val/accuracy", "max"

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        inputs: str = "tokens",
        precision: precision_lib.Policy | None = None,
    ):
        train_arrays(dataset, "sequence_classification")  # a dataset with a train split, or one line
        if dataset.num_classes is None or dataset.input_shape is None:
            raise ConfigError(
                f"task=sequence_classification needs labelled sequences; data={dataset.name} has no classes"
            )
        hint = (
            "choose a text or sequence data= (imdb_reviews), or set task.inputs to the field holding "
            "the sequence"
        )
        self.fields = (inputs, "label")  # and "mask" where the data has one
        require_fields(self.fields, "sequence_classification", dataset, hint)
        if len(dataset.input_shape) > 2:
            raise ConfigError(
                f"task=sequence_classification reads sequences; data={dataset.name} gives "
                f"{tuple(dataset.input_shape)} examples (images: use task=classification)"
            )
        self.inputs, self.num_classes = inputs, dataset.num_classes
        kwargs = {"input_shape": tuple(dataset.input_shape), "num_outputs": self.num_classes,
                  "max_len": int(dataset.input_shape[0])}  # fmt: skip
        if "vocab_size" in dataset.info:
            kwargs["vocab_size"] = int(dataset.info["vocab_size"])
        super().__init__(model, make_optimizer, total_steps, dataset, kwargs, precision)

    def logits(self, model: nnx.Module, batch: Batch) -> jax.Array:
        mask = batch.get("mask")
        out = model(batch[self.inputs]) if mask is None else model(batch[self.inputs], mask=mask)
        return self.precision.cast_output(out)

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        logits = self.logits(model, batch)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}

    def eval_step(self, state: State, batch: Batch) -> Metrics:
        batch = self.dataset.transform(state["rng"], batch, False)
        logits = self.logits(self.eval_model(state), batch)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return metrics_lib.classification_sums(logits, batch["label"], losses, batch[EVAL_WEIGHT])

    def evaluators(self) -> dict[str, Evaluator]:
        return {
            "metrics": Sums(self.eval_step, metrics_lib.classification_metrics, METRICS, report=self._report)
        }

    def _report(self, metrics: dict) -> dict:
        title = f"{self.dataset.name}: test"
        return {
            "confusion_matrix": images.confusion_matrix(
                metrics["confusion_matrix"], self.dataset.class_names, title
            )
        }
