"""The seam between the engine and what is being learned.

A task is a small object with pure, jittable functions. The engine knows nothing
else about it: it jits ``train_step`` (scanned over several batches per dispatch),
sums the outputs of ``eval_step`` over an eval split and calls ``finalize`` on the
sums. Supervised, generative and RL tasks all fit: an RL task ignores ``batch``
(it is ``None``) and rolls out its environments inside ``train_step``.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

State = Any  # a pytree of arrays; must hold an int32 scalar under "step"
Batch = Any  # a dict of arrays with a leading batch axis, or None for RL tasks
Metrics = dict[str, jax.Array]


class Task(Protocol):
    """What the engine calls. All three step functions must be pure and jittable."""

    def init(self, rng: jax.Array, batch: Batch) -> State:
        """Fresh state (params, optimizer state, rng, "step"=0) for one example batch."""

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        """One update. Returns the new state and scalar metrics (means over the batch)."""

    def eval_step(self, state: State, batch: Batch) -> Metrics:
        """Sums over one eval batch (weighted by ``batch["mask"]``), to be added across batches."""

    def finalize(self, sums: Metrics) -> Metrics:
        """Turn summed eval outputs into metrics (scalars, plus arrays such as a confusion matrix)."""
