"""How a run feeds its replicas and lays out their state: the loop's own ``engine.api.Paradigm``.

Seeds and a learning-rate grid share one feed; cross-validation folds each read their own subset
of the train split; the state is stacked on a leading replica axis. A paradigm that does not fit
(federated rounds: ``engine/federated.py``) brings its own in its place.
"""

from __future__ import annotations

from typing import Any

from research.data.base import Dataset
from research.engine import feed as feeds
from research.engine.cross_validation import FoldPlan
from research.engine.replicas import Replicas
from research.engine.sharding import state_shardings


class ReplicaLayout:
    """The loop's own ``Paradigm``: one feed for every replica (seeds, a learning-rate grid) or a
    subset of the train split per fold, the state stacked on a leading replica axis."""

    def __init__(self, dataset: Dataset | None, seed: int, replicas: Replicas, folds: FoldPlan | None):
        self.seed, self.replicas, self.folds = seed, replicas, folds
        self.examples_per_step = dataset.batch_size * replicas.count if dataset is not None else None

    def feed(self, dataset: Dataset | None, mesh: Any) -> Any:
        subsets = self.folds.train if self.folds else None
        return feeds.make_feed(dataset, self.seed, self.replicas.num_seeds, mesh, subsets)

    def shardings(self, mesh: Any, abstract: Any, rules: Any) -> Any:
        return state_shardings(mesh, abstract, rules, leading_axes=int(self.replicas.vmapped))
