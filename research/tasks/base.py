"""Defaults for the declarations of the task contract (``research/engine/api.py``).

``TaskBase`` holds them, so a task states only what differs: a loss to watch, the model
under "params"/"model_state", no counters, no evaluators of its own.
"""

from __future__ import annotations

from research.engine.api import Batch, Evaluator, Metrics, State, Task

__all__ = ["Batch", "Metrics", "State", "Task", "TaskBase"]


class TaskBase:
    """Defaults for the declarations: a loss to watch, the model under "params"/"model_state"."""

    metric: str = "val/loss"
    metric_mode: str = "min"
    headline: tuple[str, ...] = ()
    finite: tuple[str, ...] = ("loss",)
    counters: tuple[str, ...] = ()
    reusable: tuple[str, ...] = ("params", "model_state")
    trainable: tuple[str, ...] = ("params",)
    frozen: tuple[str, ...] = ()

    def evaluators(self) -> dict[str, Evaluator]:
        return {}
