"""Defaults for the declarations of the task contract (``research/engine/api.py``).

``TaskBase`` holds them, so a task states only what differs: a loss to watch, the model
under "params"/"model_state", no counters, no evaluators of its own. ``require_fields``
checks the fields a task declares against a dataset's, for the build step and for the
constructors that read examples themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from research.data.base import Dataset
from research.engine.api import Batch, Evaluator, Metrics, State, Task
from research.errors import ConfigError

__all__ = ["Batch", "Metrics", "State", "Task", "TaskBase", "data_fields", "require_fields"]

RENAME = "rename them in the data (the keys its loader yields)"


class TaskBase:
    """Defaults for the declarations: a loss to watch, the model under "params"/"model_state"."""

    metric: str = "val/loss"
    metric_mode: str = "min"
    headline: tuple[str, ...] = ()
    finite: tuple[str, ...] = ("loss",)
    counters: tuple[str, ...] = ()
    reusable: tuple[str, ...] = ("params", "model_state")
    trainable: tuple[str, ...] = ("params",)
    optimized: tuple[tuple[str, str], ...] = (("params", "opt_state"),)
    frozen: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # none declared: unchecked

    def evaluators(self) -> dict[str, Evaluator]:
        return {}


def data_fields(dataset: Dataset) -> list[str]:
    """The fields of ``dataset``'s examples, read off the first split held in memory (train, else
    val: the evaluation splits always are); empty when none is, so nothing is read just to check.
    """
    for name in ("train", "val", "test"):
        split = dataset.splits.get(name)
        if split is not None and split.in_memory:
            return sorted(split.arrays())
    return []


def require_fields(fields: Sequence[str], task: str, dataset: Dataset, hint: str = RENAME) -> None:
    """One line naming the fields ``task`` reads that ``dataset`` lacks: without it, the first
    step fails inside jit with a KeyError, after the run directory is made.
    """
    given = data_fields(dataset)
    missing = [f for f in fields if given and f not in given]
    if missing:
        raise ConfigError(
            f"task={task} reads field(s) {missing} but data={dataset.name} gives {given}: {hint}"
        )
