"""Running evaluators on their schedules, and turning what they return into records.

The engine knows an evaluator only by its schedule and whether it reads a split.
Evaluators that read data get the split's padded batches and weights (on device
once, shared by all of them); their metrics are prefixed with the split (``val/``,
``test/``). Evaluators that read none (RL rollouts) keep their own prefix.

With a weight average (``optimizer.ema``) the evaluators see the weights ``weights`` names
(``trainer.eval_weights``) in the model's place (``averaging.py``); the final pass reports
the other weights too, under ``<prefix>_<raw|ema>/`` (``test_raw/accuracy``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from research import statistics
from research.data.base import Dataset
from research.engine import averaging
from research.engine import feed as feeds
from research.engine.api import Evaluator
from research.engine.replicas import Replicas
from research.engine.steps import Programs
from research.errors import ConfigError

VAL, TEST = "val", "test"


@dataclasses.dataclass
class EvalContext:
    """What an evaluator may use: the run's compiler and its replica layout."""

    programs: Programs
    replicas: Replicas
    final: bool = False
    step: int = 0

    @property
    def vmapped(self) -> bool:
        return self.replicas.vmapped

    @property
    def replica_count(self) -> int:
        return self.replicas.count

    def per_replica(self, fn: Callable, in_axes: Any = 0) -> Callable:
        """``fn`` mapped over the leading replica axis of its state (itself with one replica)."""
        return jax.vmap(fn, in_axes=in_axes) if self.vmapped else fn

    def submit(self, program: Any, *args: Any) -> None:
        self.programs.submit("eval", program, *args)

    def run(self, program: Any, *args: Any) -> Any:
        return self.programs.run("eval", program, *args)


@dataclasses.dataclass
class Outcome:
    """One evaluation pass: scalars for the record, larger arrays for the summary, images."""

    scalars: dict[str, Any] = dataclasses.field(default_factory=dict)
    arrays: dict[str, Any] = dataclasses.field(default_factory=dict)
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def add(self, prefix: str, metrics: dict, images: dict, vmapped: bool) -> None:
        scalar_ndim = 1 if vmapped else 0
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.ndim == scalar_ndim:
                self.scalars.update(scalar_record(f"{prefix}/{k}", v))
            else:
                self.arrays[f"{prefix}/{k}"] = v
        for k, image in images.items():
            self.images[f"{prefix}/{k}"] = image


def scalar_record(key: str, value: np.ndarray, replica: str = "seed") -> dict:
    """A scalar as it is recorded; with several replicas (seeds, folds) their mean, sample std
    (``research.statistics.std``, the spread everywhere) and values.
    """
    if value.ndim == 0:
        return {key: value.item()}
    spread = statistics.std(value)
    return {
        key: float(value.mean()),
        **({f"{key}_std": spread} if spread is not None else {}),
        f"{key}_per_{replica}": value.tolist(),
    }


def split_prefix(e: Evaluator, split: str) -> str:
    """The prefix of an evaluator's metrics: the split it reads, or its own (RL rollouts: eval)."""
    return split if e.needs_data else e.schedule.prefix


def check_metric(metric: str, evaluators: dict[str, Evaluator], prefix: Callable = split_prefix) -> None:
    """The early-stopping metric must be one that the run's validation evaluators record."""
    known = {f"{prefix(e, VAL)}/{m}" for e in evaluators.values() for m in e.metric_names()}
    if metric not in known:
        raise ConfigError(
            f"trainer.early_stopping.metric={metric!r} is not a metric this run evaluates: "
            f"choose one of {', '.join(sorted(known)) or '(none: the task has no evaluator)'}"
        )


class Evaluation:
    def __init__(
        self,
        evaluators: dict[str, Evaluator],
        dataset: Dataset | None,
        mesh: Any,
        programs: Programs,
        replicas: Replicas,
        eval_every: int,
        weights: str = averaging.EMA,
        in_front: bool = False,
    ):
        """``weights``: which weights to evaluate when the state holds an average; ``in_front``:
        the states handed in hold them in the model's place already (a saved run's, read)."""
        self.evaluators, self.eval_every = evaluators, eval_every
        self.weights, self.in_front = weights, in_front
        self.ctx = EvalContext(programs, replicas)
        needs_data = any(e.needs_data for e in evaluators.values())
        if needs_data and dataset is None:
            names = [n for n, e in evaluators.items() if e.needs_data]
            raise ConfigError(f"evaluators {names} read a dataset, but data=none: remove them or set data=")
        self.data = feeds.eval_arrays(dataset, mesh) if needs_data else {}

    def check_metric(self, metric: str) -> None:
        check_metric(metric, self.evaluators, self._prefix)

    def recorded(self, metric: str) -> str:
        """The name under which validation records ``metric`` (cross-validation renames it)."""
        return metric

    def prepare(self, state: Any) -> None:
        """Start compiling every evaluator's program for each split it will read."""
        for e in self.evaluators.values():
            for split in self._splits(e):
                e.prepare(self.ctx, state, self.data.get(split) if e.needs_data else None)

    def due(self, step: int, at_end: bool) -> list[str]:
        out = []
        for name, e in self.evaluators.items():
            every = self.eval_every if e.schedule.every is None else e.schedule.every
            if (every and step % every == 0) or at_end:
                out.append(name)
        return out

    def run(self, state: Any, step: int, names: list[str], split: str) -> Outcome:
        """The named evaluators on ``split`` (val during training, test at the end)."""
        self.ctx.final = split == TEST
        return self._pass(self._front(state), step, names, split)

    def final(self, state: Any, step: int, split: str = TEST) -> Outcome:
        """Every evaluator scheduled for the end, with its end-of-run reports, on ``split``; with a
        weight average, also on the other weights, its metrics and images under ``<prefix>_<other>/``.
        """
        self.ctx.final = True
        state = self._front(state)
        outcome = self._pass(state, step, self.final_names(), split)
        task = self.ctx.programs.task
        if averaging.averaged(task, state):
            self.ctx.final = True
            tag = averaging.other(self.weights)
            also = self._pass(averaging.exchange(task, state), step, self.final_names(), split)
            outcome.scalars.update(_tagged(also.scalars, tag))
            outcome.arrays.update(_tagged(also.arrays, tag))
            outcome.images.update(_tagged(also.images, tag))
        return outcome

    def _front(self, state: Any) -> Any:
        if self.in_front:
            return state
        return averaging.in_front(self.ctx.programs.task, state, self.weights)

    def _pass(self, state: Any, step: int, names: list[str], split: str) -> Outcome:
        outcome = Outcome()
        self.ctx.step = step
        for name in names:
            e = self.evaluators[name]
            if self.ctx.final and not e.schedule.final:
                continue
            result = e(self.ctx, state, self.data.get(split) if e.needs_data else None)
            prefix = self._prefix(e, split)
            outcome.add(prefix, result.metrics, result.images, self.ctx.vmapped)
        return outcome

    def final_names(self) -> list[str]:
        return [n for n, e in self.evaluators.items() if e.schedule.final]

    _prefix = staticmethod(split_prefix)

    @staticmethod
    def _splits(e: Evaluator) -> list[str | None]:
        if not e.needs_data:
            return [None]
        return [VAL, TEST] if e.schedule.final else [VAL]


def _tagged(values: dict, tag: str) -> dict:
    """``test/accuracy`` -> ``test_<tag>/accuracy``: another pass's metrics beside the main ones."""
    out = {}
    for key, value in values.items():
        head, _, rest = key.partition("/")
        out[f"{head}_{tag}/{rest}" if rest else f"{key}_{tag}"] = value
    return out
