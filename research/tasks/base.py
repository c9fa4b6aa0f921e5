"""The seam between the engine and what is being learned.

A task is a small object with pure, jittable functions and a few declarations; the
engine knows nothing else about it. It jits ``train_step`` (scanned over several
batches per dispatch), checks the metrics the task names for non-finite values,
sums the counters it names, and runs the task's evaluators on their schedules.
Supervised, self-supervised, generative and RL tasks all fit: an RL task ignores
``batch`` (it is ``None``) and rolls out its environments inside ``train_step``;
a GAN keeps two models and two optimizer states in its state.

``TaskBase`` holds the defaults, so a task states only what differs.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from research.evaluators.base import Evaluator

State = Any  # a pytree of arrays; must hold an int32 scalar under "step"
Batch = Any  # a dict of arrays with a leading batch axis, or None for RL tasks
Metrics = dict[str, jax.Array]


class Task(Protocol):
    """What the engine calls and reads."""

    # The evaluation metric that picks the best checkpoint and drives early stopping
    # unless trainer.early_stopping.metric names another, and whether higher is better.
    metric: str
    metric_mode: str
    # Train metrics whose non-finite value stops the run at that step.
    finite: tuple[str, ...]
    # Train metrics that count something per step (env steps, tokens): summed, not averaged,
    # and reported as a rate (``<name>_per_s``) in the summary.
    counters: tuple[str, ...]
    # Top-level state keys holding learned model variables: what ``trainer.init_from`` loads,
    # what ``num_params`` counts (``trainable``), and what inference restores.
    reusable: tuple[str, ...]
    trainable: tuple[str, ...]
    # Regexes on the paths of model variables that training keeps as they are (optimizer.freeze):
    # ``trainer.init_from`` reports which of the loaded ones they hold fixed.
    frozen: tuple[str, ...]

    def init(self, rng: jax.Array, batch: Batch) -> State:
        """Fresh state (params, optimizer states, rng, "step"=0) for one example batch."""

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        """One update. Returns the new state and scalar metrics (means over the batch)."""

    def evaluators(self) -> dict[str, Evaluator]:
        """The task's own evaluations by name (config may add more: ``evaluators``)."""


class TaskBase:
    """Defaults for the declarations: a loss to watch, the model under "params"/"model_state"."""

    metric: str = "val/loss"
    metric_mode: str = "min"
    finite: tuple[str, ...] = ("loss",)
    counters: tuple[str, ...] = ()
    reusable: tuple[str, ...] = ("params", "model_state")
    trainable: tuple[str, ...] = ("params",)
    frozen: tuple[str, ...] = ()

    def evaluators(self) -> dict[str, Evaluator]:
        return {}
