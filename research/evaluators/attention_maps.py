"""An attention map of one fixed example: which source positions each output token read.

A ``StateFunction`` whose jitted ``fn(state)`` returns the weights (T, S) and the output ids
(T,); the host crops them to the real tokens and draws a heatmap whose rows and columns
are labelled with the tokens themselves (colours scaled to the largest weight), so successive
evaluations show the alignment form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from research import images
from research.engine.api import Result, Schedule
from research.evaluators.state_function import StateFunction

CELL_INCHES = 0.22  # figure size per token
MIN_INCHES = 3.0
SPACE = "\u2423"  # how a space is labelled (open box)


class AttentionMap(StateFunction):
    """``fn(state) -> {"weights": (T, S), "output": (T,) ids}`` drawn as the image ``name``.

    ``output_labels(ids)`` names the output tokens up to and including the end token.
    """

    def __init__(
        self,
        fn: Callable[[Any], dict],
        source_labels: Sequence[str],
        output_labels: Callable[[np.ndarray], list[str]],
        name: str = "cross_attention",
        schedule: Schedule | None = None,
    ):
        super().__init__(fn, (), schedule, image_keys=("weights", "output"))
        self.source_labels = [SPACE if c == " " else c for c in source_labels]
        self.output_labels, self.name = output_labels, name

    def __call__(self, ctx: Any, state: Any, data: None) -> Result:
        result = super().__call__(ctx, state, data)
        rows = self.output_labels(result.images["output"])
        weights = np.asarray(result.images["weights"], np.float32)[: len(rows), : len(self.source_labels)]
        return Result(result.metrics, {self.name: self.draw(weights, rows)})

    def draw(self, weights: np.ndarray, rows: list[str]) -> np.ndarray:
        plt = images.pyplot()
        width = max(MIN_INCHES, CELL_INCHES * len(self.source_labels) + 1)
        fig, ax = plt.subplots(figsize=(width, max(MIN_INCHES, CELL_INCHES * len(rows) + 1)), dpi=100)
        ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(float(weights.max()), 1e-6), aspect="auto")
        ax.set_xticks(range(len(self.source_labels)), self.source_labels, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        fig.tight_layout()
        return images.figure_array(fig)
