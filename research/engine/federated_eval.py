"""The global model scored on each federated client's own examples: the fairness figure.

Every evaluator of the task that reads a split runs once per client, on the first
``examples`` of that client's partition (padded to one shape with weight 0, so one compiled
program serves every client), as cross-validation runs them once per fold. Records
``clients/<metric>`` (the mean over clients) and ``clients/<metric>_std`` (the sample std over
clients, the spread federated papers report as fairness); the summary adds
``clients/<metric>_per_client``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from research import statistics
from research.data.base import Dataset
from research.data.partition import Partition
from research.engine import feed as feeds
from research.engine.api import Evaluator, Result, Schedule
from research.engine.sharding import batch_sharding

PREFIX = "clients"


class ClientEvaluation:
    """The task's data-reading evaluators, once per client on that client's own examples."""

    needs_data = False

    def __init__(
        self, evaluators: dict[str, Evaluator], dataset: Dataset, partition: Partition, examples: int
    ):
        self.evaluators = {n: e for n, e in evaluators.items() if e.needs_data}
        self.schedule = Schedule(prefix=PREFIX)
        self.dataset, self.partition, self.examples = dataset, partition, examples
        self._data: list[tuple] | None = None

    def metric_names(self) -> tuple[str, ...]:
        names = [m for e in self.evaluators.values() for m in e.metric_names()]
        return tuple(n for m in names for n in (m, f"{m}_std"))

    def client_data(self, mesh: Any) -> list[tuple]:
        """Each client's first examples as (batches, weights) on device, all of one shape."""
        if self._data is None:
            arrays = self.dataset.splits["train"].arrays()
            size = int(min(self.examples, self.partition.counts.max()))
            idx, mask = feeds.eval_indices(size, self.dataset.eval_batch_size)
            self._data = []
            for c in range(self.partition.clients):
                own = self.partition.members(c)[:size]
                weight = (idx < len(own)).astype(np.float32) * mask
                rows = own[np.minimum(idx, len(own) - 1)]
                batches = {k: v[rows] for k, v in arrays.items()}
                self._data.append(jax.device_put((batches, weight), batch_sharding(mesh, mask.shape, axis=1)))
        return self._data

    def prepare(self, ctx: Any, state: Any, data: Any) -> None:
        mesh = jax.tree.leaves(state)[0].sharding.mesh
        for e in self.evaluators.values():
            e.prepare(ctx, state, self.client_data(mesh)[0])

    def __call__(self, ctx: Any, state: Any, data: Any) -> Result:
        final, ctx.final = ctx.final, False  # no end-of-run reports (images) per client
        try:
            per_client: dict[str, list] = {}
            for client_data in self.client_data(jax.tree.leaves(state)[0].sharding.mesh):
                for e in self.evaluators.values():
                    for k, v in e(ctx, state, client_data).metrics.items():
                        if np.ndim(v) == 0:
                            per_client.setdefault(k, []).append(float(v))
        finally:
            ctx.final = final
        metrics: dict[str, Any] = {}
        for k, values in per_client.items():
            values = np.asarray(values)
            metrics[k] = float(values.mean())
            spread = statistics.std(values)
            if spread is not None:
                metrics[f"{k}_std"] = spread
            metrics[f"{k}_per_client"] = values
        return Result(metrics)
