"""How batches reach the compiled step.

Three feeds share one shape of step, ``scan(body, state, xs)`` with
``batch = feed.gather(data, x)``:

- ``MemoryFeed``: the split lives on device; ``xs`` are example indices
  (steps x batch), so a step costs no host work beyond a tiny index transfer per
  call. The order of every step derives from (seed + replica, epoch), so a resumed
  run sees exactly the batches an uninterrupted one would, and replica k those of the
  single run with seed + k. With cross-validation
  folds each replica draws from its own subset (its fold's training indices), in the
  order of seed index 0, as the single-fold run does.
- ``StreamFeed``: batches come from a grain iterator on the host and are stacked
  per call; the iterator position is checkpointed.
- ``NoFeed``: RL tasks make their own data; ``xs`` is a placeholder.

Each declares ``by_step``: whether a call's ``xs`` follow from the step alone (one row per
data stream), so the loop can make and compile the next call ahead; a stream's iterator
position is checkpointed with the state and must not run ahead of it.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from research.data.base import Dataset, Split
from research.engine.sharding import batch_sharding, replicated
from research.errors import ConfigError


class MemoryFeed:
    by_step = True

    def __init__(
        self, split: Split, batch_size: int, seed: int, num_seeds: int, mesh: Any, subsets: Any = None
    ):
        """``subsets``: (replicas, T) indices into the split, one row per replica (CV folds)."""
        arrays = split.arrays()
        self.subsets = None if subsets is None else np.asarray(subsets, np.int32)
        self.num_examples = split.num_examples if subsets is None else self.subsets.shape[1]
        self.streams = num_seeds if subsets is None else len(self.subsets)
        self.batch_size = batch_size
        self.steps_per_epoch = self.num_examples // batch_size
        self.seed, self.num_seeds, self.mesh = seed, num_seeds, mesh
        self.data = jax.device_put(arrays, replicated(mesh))
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self.iterator = None

    def example(self) -> dict:
        return jax.tree.map(lambda a: a[: self.batch_size], self.data)

    @staticmethod
    def gather(data: dict, x: jax.Array) -> dict:
        return jax.tree.map(lambda a: a[x], data)

    def restored(self) -> None:
        """Nothing to do after a restore: the order follows from the step."""

    def _perm(self, replica: int, epoch: int) -> np.ndarray:
        key = (replica, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * self.streams:
                self._perms.clear()
            rng = np.random.default_rng([self.seed + replica, 0, epoch])  # the single run of that seed
            self._perms[key] = rng.permutation(self.num_examples).astype(np.int32)
        return self._perms[key]

    def order(self, replica: int, epoch: int) -> np.ndarray:
        """The split indices replica ``replica`` trains on in ``epoch``, in order."""
        if self.subsets is None:
            return self._perm(replica, epoch)
        return self.subsets[replica][self._perm(0, epoch)]

    def xs(self, step: int, n: int) -> jax.Array:
        """Indices for steps [step, step + n): (n, B), or (n, replicas, B) with several seeds or folds."""
        rows = []
        for s in range(step, step + n):
            epoch, pos = divmod(s, self.steps_per_epoch)
            sl = slice(pos * self.batch_size, (pos + 1) * self.batch_size)
            rows.append([self.order(r, epoch)[sl] for r in range(self.streams)])
        idx = np.stack([np.stack(r) for r in rows])  # (n, replicas, B)
        if self.streams == 1:
            idx = idx[:, 0]
        return jax.device_put(idx, batch_sharding(self.mesh, idx.shape, axis=idx.ndim - 1))


class StreamFeed:
    by_step = False

    def __init__(self, split: Split, batch_size: int, seed: int, mesh: Any):
        self.num_examples = split.num_examples
        self.batch_size = batch_size
        self.steps_per_epoch = self.num_examples // batch_size
        self.mesh = mesh
        self.data = None
        if batch_size % jax.process_count():
            raise ConfigError(
                f"data.batch_size={batch_size} must split evenly over {jax.process_count()} processes"
            )
        # Each process reads its own shard, a slice of every global batch.
        self.iterator = split.iterator(
            batch_size // jax.process_count(), seed, jax.process_index(), jax.process_count()
        )
        self._peek = next(self.iterator)
        self._used_peek = False

    def example(self) -> dict:
        return self._peek

    @staticmethod
    def gather(data: None, x: dict) -> dict:
        return x

    def _next(self) -> dict:
        if not self._used_peek:
            self._used_peek = True
            return self._peek
        return next(self.iterator)

    def xs(self, step: int, n: int) -> dict:
        batches = [self._next() for _ in range(n)]
        stacked = jax.tree.map(lambda *b: np.stack(b), *batches)

        def global_batch(local: np.ndarray) -> jax.Array:
            shape = (n, self.batch_size, *local.shape[2:])
            sharding = batch_sharding(self.mesh, shape, axis=1)
            return jax.make_array_from_process_local_data(sharding, local, shape)

        return jax.tree.map(global_batch, stacked)

    def restored(self) -> None:
        """After the iterator state is restored, the peeked batch is stale."""
        self._used_peek = True


class NoFeed:
    by_step = True
    steps_per_epoch = None
    data = None
    iterator = None

    def __init__(self, num_seeds: int):
        self.num_seeds = num_seeds

    def example(self) -> None:
        return None

    @staticmethod
    def gather(data: None, x: Any) -> None:
        return None

    def xs(self, step: int, n: int) -> np.ndarray:
        return np.zeros((n, self.num_seeds) if self.num_seeds > 1 else (n,), np.int32)

    def restored(self) -> None:
        """Nothing to restore: the task makes its own data."""


def eval_indices(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every example once, in order, in (batches, B) rows; the last row padded and masked out."""
    batches = -(-num_examples // batch_size)
    idx = np.arange(batches * batch_size)
    mask = (idx < num_examples).astype(np.float32)
    idx = np.minimum(idx, num_examples - 1).astype(np.int32)
    return idx.reshape(batches, batch_size), mask.reshape(batches, batch_size)


def example_spec(dataset: Dataset | None, split: str) -> dict | None:
    """Shapes and dtypes of one train batch, read off ``split`` without placing it anywhere;
    None without a dataset or when the split streams (its first batch would have to be read).
    """
    if dataset is None or not dataset.splits[split].in_memory:
        return None
    arrays = dataset.splits[split].arrays()
    return {k: jax.ShapeDtypeStruct((dataset.batch_size, *v.shape[1:]), v.dtype) for k, v in arrays.items()}


def make_feed(dataset: Dataset | None, seed: int, num_seeds: int, mesh: Any, subsets: Any = None):
    """``subsets``: per-replica training indices (CV folds), which only an in-memory split can serve."""
    if dataset is None:
        return NoFeed(num_seeds)
    split = dataset.splits["train"]
    if split.in_memory:
        return MemoryFeed(split, dataset.batch_size, seed, num_seeds, mesh, subsets)
    if subsets is not None:
        raise ConfigError("trainer.cv_folds needs the train split in memory (data.in_memory=true)")
    return StreamFeed(split, dataset.batch_size, seed, mesh)


def eval_arrays(dataset: Dataset | None, mesh: Any) -> dict:
    """Val and test splits on device once, as padded (batches, B, ...) rows with a mask.

    Splits with the same number of batches share one compiled evaluation program.
    """
    if dataset is None:
        return {}
    out = {}
    for split in ("val", "test"):
        s = dataset.splits.get(split)
        if s is None or not s.in_memory:
            raise ConfigError(f"the {split} split of {dataset.name} must fit in memory for evaluation")
        idx, mask = eval_indices(s.num_examples, dataset.eval_batch_size)
        batches = {k: v[idx] for k, v in s.arrays().items()}
        out[split] = jax.device_put((batches, mask), batch_sharding(mesh, mask.shape, axis=1))
    return out
