"""Per-class precision, recall and F1 of a classifier, where the task reports only their macro means.

``python -m research.evaluate run=<dir> +evaluators=per_class`` writes ``<split>/per_class_precision``,
``_recall``, ``_f1`` and ``_support`` (one value per class, in ``dataset.class_names`` order) into
eval.json, and a table of them as ``plots/eval/<split>_per_class.png``; the task's own
evaluator already writes the confusion matrix beside it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research import images
from research.data.base import EVAL_WEIGHT
from research.engine.api import Schedule
from research.evaluators.adversarial import image_logits
from research.evaluators.sums import Sums
from research.metrics import safe_divide


def per_class(confusion: jax.Array) -> dict[str, jax.Array]:
    """Per-class scores of a (true, predicted) count matrix; 0 where a class is never predicted or seen."""
    hits = jnp.diag(confusion)
    precision = safe_divide(hits, confusion.sum(axis=0))
    recall = safe_divide(hits, confusion.sum(axis=1))
    f1 = safe_divide(2 * precision * recall, precision + recall)
    return {
        "per_class_precision": precision,
        "per_class_recall": recall,
        "per_class_f1": f1,
        "per_class_support": confusion.sum(axis=1),
    }


class PerClass(Sums):
    """The confusion matrix summed over a split, finalised into per-class scores."""

    def __init__(self, task: Any, dataset: Any, every: int | None = None):
        self.logits, self.dataset = image_logits(task, dataset, "per_class"), dataset
        self.num_classes = dataset.num_classes
        super().__init__(
            self.confusion, lambda sums: per_class(sums["confusion"]), (), Schedule(every=every), self.table
        )

    def confusion(self, state: Any, batch: dict) -> dict:
        labels = self.dataset.transform(state["rng"], batch, False)["label"]
        predicted = jnp.argmax(self.logits(state, batch["image"]), -1)
        true, pred = jax.nn.one_hot(labels, self.num_classes), jax.nn.one_hot(predicted, self.num_classes)
        return {"confusion": jnp.einsum("b,bi,bj->ij", batch[EVAL_WEIGHT], true, pred)}

    def table(self, metrics: dict) -> dict:
        """The scores as a table image (several seeds: their mean)."""
        plt = images.pyplot()
        names = self.dataset.class_names or [str(i) for i in range(self.num_classes)]
        columns = ("precision", "recall", "f1", "support")
        rows = [
            [f"{np.mean(np.asarray(metrics[f'per_class_{c}'])[..., i]):.3f}" for c in columns]
            for i in range(self.num_classes)
        ]
        fig, ax = plt.subplots(figsize=(5, 0.6 + 0.28 * self.num_classes), dpi=100)
        ax.axis("off")
        ax.table(cellText=rows, rowLabels=names, colLabels=columns, loc="center")
        fig.tight_layout()
        return {"per_class": images.figure_array(fig)}
