"""A full pass that gathers per-example outputs, finalised on the host.

For metrics that are not sums of per-batch terms: ROC AUC over anomaly scores,
a Frechet distance between feature sets, a calibration curve. The device computes
``outputs(state, batch)`` for every batch in one compiled scan; the host drops the
padding rows and calls ``finalize`` once per replica.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from research.data.base import EVAL_WEIGHT
from research.engine.api import Result, Schedule

# outputs(state, batch) -> {name: (B, ...) array}; finalize({name: (N, ...) ndarray}) -> Result
OutputsFn = Callable[[Any, dict], dict]
HostFinalizeFn = Callable[[dict[str, np.ndarray]], Result]


class Collect:
    needs_data = True

    def __init__(
        self,
        outputs: OutputsFn,
        finalize: HostFinalizeFn,
        names: Sequence[str],
        schedule: Schedule | None = None,
    ):
        self.outputs, self.finalize, self.names = outputs, finalize, tuple(names)
        self.schedule = schedule or Schedule()
        self._program = None

    def metric_names(self) -> tuple[str, ...]:
        return self.names

    def program(self, ctx: Any) -> Any:
        if self._program is None:
            outputs = ctx.per_replica(self.outputs, in_axes=(0, None))

            def collect(state: Any, batches: dict, weights: jax.Array) -> dict:
                def body(_: None, row: tuple) -> tuple:
                    batch, w = row
                    return None, outputs(state, {**batch, EVAL_WEIGHT: w})

                return jax.lax.scan(body, None, (batches, weights))[1]

            self._program = jax.jit(collect)
        return self._program

    def prepare(self, ctx: Any, state: Any, data: tuple) -> None:
        ctx.submit(self.program(ctx), state, *data)

    def __call__(self, ctx: Any, state: Any, data: tuple) -> Result:
        stacked = jax.device_get(ctx.run(self.program(ctx), state, *data))
        keep = np.asarray(jax.device_get(data[1])).reshape(-1) > 0
        replicas = ctx.replica_count if ctx.vmapped else None

        def rows(a: np.ndarray, r: int | None) -> np.ndarray:
            a = a if r is None else a[:, r]  # (batches, [R,] B, ...) -> (batches, B, ...)
            return a.reshape(-1, *a.shape[2:])[keep]

        if replicas is None:
            return self.finalize({k: rows(v, None) for k, v in stacked.items()})
        results = [self.finalize({k: rows(v, r) for k, v in stacked.items()}) for r in range(replicas)]
        metrics = {k: np.stack([res.metrics[k] for res in results]) for k in results[0].metrics}
        return Result(metrics, results[0].images)
