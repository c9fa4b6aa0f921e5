"""Early stopping and best-checkpoint bookkeeping: which evaluation was best, and whether to stop.

Its state travels in every checkpoint's metadata (``meta()``), so a resumed run
keeps counting patience where the killed one stopped.
"""

from __future__ import annotations

import numpy as np


class BestTracker:
    """Early stopping and best-checkpoint bookkeeping on one validation metric."""

    def __init__(self, metric: str, mode: str, patience: int | None, min_delta: float, meta: dict):
        self.metric, self.sign, self.patience, self.min_delta = (
            metric,
            (1 if mode == "max" else -1),
            patience,
            min_delta,
        )
        self.value = meta.get("best_value")
        self.step = meta.get("best_step")
        self.metrics = meta.get("best_metrics", {})
        self.stale = meta.get("stale_evals", 0)
        self.is_new_best = False

    def update(self, step: int, metrics: dict) -> None:
        """``metrics``: one evaluation's record values (floats, and per-seed lists)."""
        if self.metric not in metrics:
            return
        value = float(np.mean(metrics[self.metric]))
        improved = self.value is None or self.sign * (value - self.value) > self.min_delta
        self.stale = 0 if improved else self.stale + 1
        # On ties the newest step is the best one, as Orbax's BestN keeps the newest of equals.
        self.is_new_best = self.value is None or self.sign * (value - self.value) >= 0
        if self.is_new_best:
            self.value, self.step = value, step
            self.metrics = dict(metrics)

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def meta(self) -> dict:
        return {
            "best_value": self.value,
            "best_step": self.step,
            "best_metrics": self.metrics,
            "stale_evals": self.stale,
        }
