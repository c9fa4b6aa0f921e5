"""Several runs as one program: independent seeds, a grid of learning rates, or CV folds.

A run of R = len(values) * num_seeds replicas vmaps init, train and eval over a
leading replica axis; replica ``r`` takes value ``r // num_seeds`` and seed index
``r % num_seeds``. Seed index ``s`` fixes the initialisation and the data order: those
of the single run with ``seed + s``, so the replicas of one seed differ only by their
learning rate, and replica ``v`` is exactly the single run at learning rate ``values[v]``.

The learning rate is gridded by scaling each replica's updates by
``values[v] / optimizer.learning_rate``: every optax optimizer applies its learning
rate (and schedule) as the last factor of its update, so this runs the whole
schedule at the replica's peak learning rate. The factor sits in the optimizer
state, so it is checkpointed with it.

Cross-validation folds (``trainer.cv_folds``) are replicas too: replica ``r`` trains on
fold ``r``'s training examples and starts from the same init as the others, so it is
the single-fold run ``trainer.cv_fold=r``. Folds do not combine with seeds or a grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.errors import ConfigError

GRIDDABLE = ("optimizer.learning_rate",)


class ReplicaScaleState(NamedTuple):
    scale: jax.Array  # this replica's learning rate over the configured one


def scale_by_replica() -> optax.GradientTransformation:
    """Multiply updates by the replica's factor (1 until ``set_scales`` writes the grid)."""

    def init(params: Any) -> ReplicaScaleState:
        del params
        return ReplicaScaleState(jnp.ones((), jnp.float32))

    def update(updates: Any, state: ReplicaScaleState, params: Any = None) -> tuple[Any, ReplicaScaleState]:
        del params
        return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class Replicas:
    """The replica layout of a run: ``num_seeds`` seeds times the grid ``values`` of ``key``."""

    num_seeds: int = 1
    key: str | None = None
    values: tuple[float, ...] = ()
    base_value: float | None = None  # the configured value the optimizer was built with
    folds: int = 1  # cross-validation folds trained side by side

    def __post_init__(self) -> None:
        if self.folds > 1 and (self.num_seeds > 1 or self.key is not None):
            raise ConfigError(
                "trainer.cv_folds trains the folds as the replicas of one program: it does not "
                "combine with trainer.num_seeds > 1 or trainer.vmap_over (use a multirun over seed)"
            )
        if self.key is not None and self.key not in GRIDDABLE:
            raise ConfigError(f"trainer.vmap_over={self.key!r}: one program can grid {', '.join(GRIDDABLE)}")
        if self.key is not None and not self.values:
            raise ConfigError(f"trainer.vmap_over={self.key} needs trainer.vmap_values, e.g. [1e-3,1e-2]")
        if self.key is None and self.values:
            raise ConfigError("trainer.vmap_values needs trainer.vmap_over=optimizer.learning_rate")
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in self.values):
            raise ConfigError(f"trainer.vmap_values={list(self.values)} must be positive numbers")
        if self.key is not None and not (isinstance(self.base_value, (int, float)) and self.base_value > 0):
            raise ConfigError(f"trainer.vmap_over={self.key} needs a positive {self.key} to scale from")

    @property
    def count(self) -> int:
        return max(len(self.values), 1) * self.num_seeds * self.folds

    @property
    def data_streams(self) -> int:
        """How many replicas read their own batches (seeds and folds; grid values share them)."""
        return self.num_seeds * self.folds

    @property
    def vmapped(self) -> bool:
        return self.count > 1

    @property
    def grids_learning_rate(self) -> bool:
        return self.key == "optimizer.learning_rate"

    def rngs(self, seed: int) -> jax.Array:
        """One init key per replica (a single key when there is one replica): seed index ``s``
        initialises as the single run with ``seed + s`` does.
        """
        if not self.vmapped:
            return jax.random.PRNGKey(seed)
        keys = jnp.stack([jax.random.PRNGKey(seed + s) for s in range(self.num_seeds)])
        return jnp.tile(keys, (self.count // self.num_seeds, 1))

    def abstract_state(self, init: Callable, seed: int, example: Any) -> Any:
        """Shapes and dtypes of the state ``init(rng, example)`` makes, stacked over the replicas."""
        rng = self.rngs(seed)
        abstract = jax.eval_shape(init, rng[0] if self.vmapped else rng, example)
        if not self.vmapped:
            return abstract
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct((self.count, *a.shape), a.dtype), abstract)

    def scales(self) -> np.ndarray:
        """Each replica's learning rate over the configured one."""
        values = np.repeat(np.asarray(self.values, np.float32), self.num_seeds)
        return values / np.float32(self.base_value)

    def optimizer(self, make_optimizer: Callable[[int], optax.GradientTransformation]) -> Callable:
        """``make_optimizer`` ending with the per-replica factor, when gridding the learning rate."""
        if not self.grids_learning_rate:
            return make_optimizer
        return lambda total_updates: optax.chain(make_optimizer(total_updates), scale_by_replica())

    def set_scales(self, state: Any) -> Any:
        """Write each replica's factor into its optimizer state (inside the jitted init)."""
        if not self.grids_learning_rate:
            return state
        scales = jnp.asarray(self.scales())
        return jax.tree.map(
            lambda s: ReplicaScaleState(scales) if isinstance(s, ReplicaScaleState) else s,
            state,
            is_leaf=lambda s: isinstance(s, ReplicaScaleState),
        )

    def labels(self) -> list[str]:
        """A name for each replica, in the order of the per-replica metric lists (none for one)."""
        if self.folds > 1:
            return [f"fold_{i}" for i in range(self.folds)]
        if not self.vmapped:
            return []
        seeds = [f"seed_{s}" for s in range(self.num_seeds)]
        if self.key is None:
            return seeds
        name = self.key.rsplit(".", 1)[-1]
        return [f"{name}_{v:g}_{s}" for v in self.values for s in seeds]

    def summary(self) -> dict[str, list]:
        """Which replica is which, next to the per-replica metric lists of the summary."""
        if self.folds > 1:
            return {"replicas/cv_fold": list(range(self.folds))}
        if self.key is None:
            return {}
        return {
            f"replicas/{self.key}": np.repeat(self.values, self.num_seeds).tolist(),
            "replicas/seed_index": np.tile(np.arange(self.num_seeds), len(self.values)).tolist(),
        }
