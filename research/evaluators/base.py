"""What an evaluator is: a named, scheduled piece of evaluation, and what it returns.

big_vision's shape: each evaluator is a small object with its own schedule, chosen
by the task (its defaults) or by config (``evaluators:``); the engine runs the due
ones and hands their results to the writers. Three kinds cover the curriculum:

- ``Sums``: per-batch sums added over a split, finalised into metrics (accuracy,
  loss, ELBO, perplexity); one compiled program per split.
- ``Collect``: a full pass that gathers per-example arrays and finalises them on
  the host (ROC AUC over reconstruction errors, a Frechet distance).
- anything else with the same call: a small training run of its own (a linear
  probe on frozen features), sample grids from a fixed noise batch, RL rollouts.

An evaluator's ``__call__(ctx, state, data)`` gets the run's state (with a leading
replica axis when several seeds train together: ``ctx.per_replica`` maps a function
over it), and ``data`` the split's arrays on device (``None`` for evaluators that
need none). Metric names are bare (``accuracy``); the engine prefixes the split.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass
class Result:
    """Scalars (or per-replica vectors) and larger arrays under ``metrics``; images as arrays.

    Images are (H, W) or (H, W, C) arrays, floats in [0, 1] or uint8: they go to
    ``plots/`` as PNG and to W&B as images.
    """

    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Schedule:
    """When an evaluator runs.

    ``every``: steps between runs during training; None follows ``trainer.eval_every``;
    0 means never during training. ``final``: also at the end, on the best state and the
    final split (test). ``prefix``: the metrics' prefix when the evaluator reads no split
    (RL rollouts: ``eval``); evaluators that read data take the split's name.
    """

    every: int | None = None
    final: bool = True
    prefix: str = "eval"


class Evaluator(Protocol):
    schedule: Schedule
    needs_data: bool

    def metric_names(self) -> tuple[str, ...]:
        """The bare names of the scalar metrics it returns (checked against early stopping)."""

    def prepare(self, ctx: Any, state: Any, data: Any) -> None:
        """Start compiling its programs for these abstract inputs (optional work ahead of time)."""

    def __call__(self, ctx: Any, state: Any, data: Any) -> Result:
        """Evaluate ``state`` on ``data`` (a split's padded batches and weights, or None)."""
