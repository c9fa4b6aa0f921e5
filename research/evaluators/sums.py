"""Per-batch sums over a split, finalised into metrics: the evaluator most tasks use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from research.data.base import EVAL_WEIGHT
from research.engine.api import Result, Schedule

# step(state, batch) -> sums; the batch carries EVAL_WEIGHT (1 real, 0 padding).
StepFn = Callable[[Any, dict], dict]
# finalize(sums) -> metrics; jittable.
FinalizeFn = Callable[[dict], dict]
# report(metrics) -> images, on the host, at the final evaluation (a confusion matrix).
ReportFn = Callable[[dict], dict]


class Sums:
    """``finalize(sum over batches of step(state, batch))``, compiled as one scan over the split."""

    needs_data = True

    def __init__(
        self,
        step: StepFn,
        finalize: FinalizeFn,
        names: Sequence[str],
        schedule: Schedule | None = None,
        report: ReportFn | None = None,
    ):
        self.step, self.finalize, self.names = step, finalize, tuple(names)
        self.schedule = schedule or Schedule()
        self.report = report
        self._program = None

    def metric_names(self) -> tuple[str, ...]:
        return self.names

    def program(self, ctx: Any) -> Any:
        if self._program is None:
            step = ctx.per_replica(self.step, in_axes=(0, None))
            finalize = ctx.per_replica(self.finalize)

            def evaluate(state: Any, batches: dict, weights: jax.Array) -> dict:
                def body(acc: Any, row: tuple) -> tuple:
                    batch, w = row
                    sums = step(state, {**batch, EVAL_WEIGHT: w})
                    return (sums if acc is None else jax.tree.map(jnp.add, acc, sums)), None

                first, _ = body(None, jax.tree.map(lambda a: a[0], (batches, weights)))
                total, _ = jax.lax.scan(body, first, jax.tree.map(lambda a: a[1:], (batches, weights)))
                return finalize(total)

            self._program = jax.jit(evaluate)
        return self._program

    def prepare(self, ctx: Any, state: Any, data: tuple) -> None:
        ctx.submit(self.program(ctx), state, *data)

    def __call__(self, ctx: Any, state: Any, data: tuple) -> Result:
        metrics = jax.device_get(ctx.run(self.program(ctx), state, *data))
        images = self.report(metrics) if (self.report and ctx.final) else {}
        return Result(metrics, images)
