"""The engine's contracts: what a task and an evaluator are, and what they hand back.

A task is the seam that lets one loop serve supervised, self-supervised, generative and
RL work: a small object with pure, jittable functions and a few declarations; the engine
knows nothing else about it. It jits ``train_step`` (scanned over several batches per
dispatch), checks the metrics the task names for non-finite values, sums the counters it
names, and runs the task's evaluators on their schedules. An RL task ignores ``batch``
(it is ``None``) and rolls out its environments inside ``train_step``; a GAN keeps two
models and two optimizer states in its state. ``research/tasks/base.py`` holds defaults.

An evaluator (big_vision's shape) is a small object with its own schedule, chosen by the
task (its defaults) or by config (``evaluators:``); the engine runs the due ones and hands
their results to the writers. ``__call__(ctx, state, data)`` gets the run's state (with a
leading replica axis when several seeds train together: ``ctx.per_replica`` maps a function
over it) and ``data`` the split's padded batches on device (``None`` for evaluators that need
none). Metric names are bare (``accuracy``); the engine prefixes the split.

Capabilities beyond the contract (a classifier's logits, a sampler) are declared as
protocols here too, so the commands and evaluators that need one check for it by type.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import numpy as np

State = Any  # a pytree of arrays; must hold an int32 scalar under "step"
Batch = Any  # a dict of arrays with a leading batch axis, or None for RL tasks
Metrics = dict[str, Any]  # scalar arrays by bare name


@dataclasses.dataclass
class Result:
    """Scalars (or per-replica vectors) and larger arrays under ``metrics``; images as arrays.

    Images are (H, W) or (H, W, C) arrays, floats in [0, 1] or uint8: they go to
    ``plots/`` as PNG and to the loggers as images.
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

    def prepare(self, ctx: Any, state: State, data: Any) -> None:
        """Start compiling its programs for these abstract inputs (optional work ahead of time)."""

    def __call__(self, ctx: Any, state: State, data: Any) -> Result:
        """Evaluate ``state`` on ``data`` (a split's padded batches and weights, or None)."""


class Task(Protocol):
    """What the engine calls and reads."""

    # The evaluation metric that picks the best checkpoint and drives early stopping
    # unless trainer.early_stopping.metric names another, and whether higher is better.
    metric: str
    metric_mode: str
    # Summary entries the console shows besides the evaluated ones (an RL return).
    headline: tuple[str, ...]
    # Train metrics whose non-finite value stops the run at that step.
    finite: tuple[str, ...]
    # Train metrics that count something per step (env steps, tokens): summed, not averaged,
    # and reported as a rate (``<name>_per_s``) in the summary.
    counters: tuple[str, ...]
    # Top-level state keys holding learned model variables: what ``trainer.init_from`` loads,
    # what ``num_params`` counts (``trainable``), and what inference restores.
    reusable: tuple[str, ...]
    trainable: tuple[str, ...]
    # (model key, optimizer-state key) pairs: which optimizer state updates which model variables.
    # The engine finds there the weight average (optimizer.ema, evaluated in the model's place) and
    # the training-health signals (research/ema.py, research/watch.py).
    optimized: tuple[tuple[str, str], ...]
    # Regexes on the paths of model variables that training keeps as they are (optimizer.freeze):
    # ``trainer.init_from`` reports which of the loaded ones they hold fixed.
    frozen: tuple[str, ...]
    # The batch fields that train_step and the task's evaluators read (``image``, ``label``):
    # the build step checks them against the data's, so other names are one line before
    # anything is created, not a KeyError inside jit. Empty: unchecked (RL reads no batch).
    fields: tuple[str, ...]

    def init(self, rng: Any, batch: Batch) -> State:
        """Fresh state (params, optimizer states, rng, "step"=0) for one example batch."""

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        """One update. Returns the new state and scalar metrics (means over the batch)."""

    def evaluators(self) -> dict[str, Evaluator]:
        """The task's own evaluations by name (config may add more: ``evaluators``)."""


@runtime_checkable
class Classifier(Protocol):
    """Logits of raw images: what export, adversarial attacks and saliency maps need."""

    def logits(self, state: State, images: Any) -> Any: ...


@runtime_checkable
class HasEvalModel(Protocol):
    """The eval-mode model of a state (features for Frechet distances and probes)."""

    def eval_model(self, state: State) -> Any: ...


@runtime_checkable
class ImageSampler(Protocol):
    """``count`` generated images in [0, 1]: sample grids, Frechet distance, ``research.generate``."""

    def sample_images(self, state: State, key: Any, count: int) -> Any: ...


@runtime_checkable
class ClassSampler(Protocol):
    """Images of given classes from a conditional generator (``research.generate``)."""

    classes: int

    def sample_classes(self, state: State, labels: Any, key: Any) -> Any: ...


@runtime_checkable
class LanguageModel(Protocol):
    """A next-token model: its vocabulary size and eval-mode graph (``research.sample``)."""

    vocab_size: int
    eval_graphdef: Any


@runtime_checkable
class Translator(Protocol):
    """An encoder-decoder: texts in, its decoded texts out (``research.sample`` prints them)."""

    def translate_texts(self, state: State, texts: list[str]) -> list[str]: ...


class Paradigm(Protocol):
    """A way of training that does not fit the loop's one feed and replica layout (big_vision's
    rule: it gets hooks, not branches in the loop). ``engine/federated.py``'s ``Rounds``: a step is
    a round, the feed draws each client's batches from its own partition, the clients' states are
    laid out over the data axis."""

    examples_per_step: int | None  # for train/examples_per_s (None: a run without data)

    def feed(self, dataset: Any, mesh: Any) -> Any: ...

    def shardings(self, mesh: Any, abstract: dict, rules: Any) -> dict: ...
