"""Cross-validation: the k folds of the train split as the replicas of one run (``trainer.cv_folds``).

``plan`` deals the train split into stratified folds (``research.data.folds``, drawn
with the run seed) padded to one shape, so the folds train as one vmapped program:
replica r trains on fold r's training examples (the feed gathers them) and validates
on fold r's held-out examples, which come from the train split (the val split is not
used). ``trainer.cv_fold=i`` runs fold i alone on the same examples in the same order,
so a multirun over it runs the folds as k jobs.

Validation records ``cv/<metric>`` (the mean over folds), ``cv/<metric>_std`` (the
sample std over folds, ddof 1) and ``cv/<metric>_per_fold``. Early stopping and the best checkpoints
follow the fold mean, and stop every fold together; the summary reports each fold's
last state, since picking each fold's best step on its own validation examples would
flatter the estimate. A CV run has no test pass: ``trainer.cv_refit`` trains on the
whole train split afterwards and reports test (``research.experiment``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from research.data import folds as folds_lib
from research.data.base import Dataset
from research.engine import feed as feeds
from research.engine.api import Evaluator
from research.engine.evaluation import VAL, Evaluation, Outcome, scalar_record
from research.engine.replicas import Replicas
from research.engine.settings import TrainerConfig
from research.engine.sharding import batch_sharding, state_shardings
from research.errors import ConfigError

CV = "cv"  # the prefix of fold-validation metrics, in place of the split's name


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """Which examples of the train split each replica trains and validates on."""

    folds: int  # k
    fold: int | None  # the one fold of a single-fold run; None: all k, one per replica
    train: np.ndarray  # (replicas, T) indices into the train split
    val: np.ndarray  # (replicas, V) indices into the train split
    val_weight: np.ndarray  # (replicas, V): 1 real, 0 padding

    @property
    def replicas(self) -> int:
        return len(self.train)

    @property
    def num_train(self) -> int:
        """Training examples per fold (an epoch's worth)."""
        return int(self.train.shape[1])

    def summary(self) -> dict:
        return {"cv_folds": self.folds, "cv_fold": self.fold}


def plan(cfg: TrainerConfig, dataset: Dataset | None, seed: int) -> FoldPlan | None:
    """The folds of this run, or None without ``trainer.cv_folds``; bad combinations are one line."""
    folds, fold = cfg.cv_folds, cfg.cv_fold
    if not isinstance(cfg.cv_refit, bool):
        raise ConfigError(f"trainer.cv_refit must be true or false, got {cfg.cv_refit!r}")
    if folds is None:
        if fold is not None or cfg.cv_refit:
            key = "trainer.cv_fold" if fold is not None else "trainer.cv_refit"
            raise ConfigError(f"{key} needs trainer.cv_folds=k (the number of folds)")
        return None
    if fold is not None and fold >= folds:
        raise ConfigError(f"trainer.cv_fold={fold} must be below trainer.cv_folds={folds}")
    if fold is not None and cfg.cv_refit:
        raise ConfigError("trainer.cv_refit follows all the folds: use it without trainer.cv_fold")
    if cfg.num_seeds > 1 or cfg.vmap_over is not None:
        raise ConfigError(
            "trainer.cv_folds does not combine with trainer.num_seeds > 1 or trainer.vmap_over: "
            "the folds are the replicas (use a multirun over seed)"
        )
    if dataset is None or not dataset.splits["train"].in_memory:
        raise ConfigError(
            "trainer.cv_folds needs a dataset whose train split is in memory (data.in_memory=true)"
        )
    arrays = dataset.splits["train"].arrays()
    rows = folds_lib.stacked(folds_lib.stratified_folds(folds_lib.stratify_labels(arrays), folds, seed))
    if fold is not None:
        rows = {k: v[fold : fold + 1] for k, v in rows.items()}
    if rows["train"].shape[1] < dataset.batch_size:
        raise ConfigError(
            f"trainer.cv_folds={folds} leaves {rows['train'].shape[1]} training examples per fold, "
            f"fewer than data.batch_size={dataset.batch_size}"
        )
    return FoldPlan(folds, fold, rows["train"], rows["val"], rows["val_weight"])


def fold_batches(arrays: dict, indices: np.ndarray, weight: np.ndarray, batch_size: int, mesh: Any) -> tuple:
    """One fold's validation examples as the evaluators read a split: (batches, weights) on device."""
    idx, mask = feeds.eval_indices(len(indices), batch_size)
    batches = {k: v[indices[idx]] for k, v in arrays.items()}
    return jax.device_put((batches, weight[idx] * mask), batch_sharding(mesh, mask.shape, axis=1))


class FoldEvaluation(Evaluation):
    """Each fold's state validated on its own held-out examples, by the run's evaluators.

    The evaluators see one fold at a time (their one compiled program, run once per fold
    on that fold's slice of the stacked state), so every evaluator works unchanged.
    """

    def __init__(
        self,
        folds: FoldPlan,
        abstract: Any,
        rules: Any,
        evaluators: dict[str, Evaluator],
        dataset: Dataset,
        mesh: Any,
        programs: Any,
        replicas: Replicas,
        eval_every: int,
    ):
        super().__init__(evaluators, dataset, mesh, programs, Replicas(), eval_every)
        self.stacked = replicas.vmapped
        arrays = dataset.splits["train"].arrays()
        self.fold_data = [
            fold_batches(arrays, folds.val[r], folds.val_weight[r], dataset.eval_batch_size, mesh)
            for r in range(folds.replicas)
        ]
        one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), abstract)
        one = one if self.stacked else abstract
        shardings = state_shardings(mesh, one, rules)
        self.fold_target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), one, shardings
        )

        def take(state: Any, fold: jax.Array) -> Any:
            return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, fold, keepdims=False), state)

        # The fold is an argument, not a constant: one small program serves every fold.
        self._take = jax.jit(take, out_shardings=shardings)

    @staticmethod
    def _prefix(e: Evaluator, split: str) -> str:
        return CV if e.needs_data else e.schedule.prefix

    @staticmethod
    def _splits(e: Evaluator) -> list[str | None]:
        return [VAL] if e.needs_data else [None]

    def recorded(self, metric: str) -> str:
        """``val/<m>`` is recorded as the fold mean ``cv/<m>``."""
        return f"{CV}/{metric.split('/', 1)[1]}" if metric.startswith(f"{VAL}/") else metric

    def prepare(self, state: Any) -> None:
        if self.stacked:
            self.ctx.submit(self._take, state, np.int32(0))
        for e in self.evaluators.values():
            e.prepare(self.ctx, self.fold_target, self.fold_data[0] if e.needs_data else None)

    def _pass(self, state: Any, step: int, names: list[str], split: str) -> Outcome:
        """Every fold's validation, whatever ``split`` says: a CV run has no test pass, and no
        end-of-run reports (a fold's arrays are not the test's).
        """
        self.ctx.final, self.ctx.step = False, step
        outcomes = []
        for r, data in enumerate(self.fold_data):
            fold_state = self.ctx.run(self._take, state, np.int32(r)) if self.stacked else state
            outcome = Outcome()
            for name in names:
                e = self.evaluators[name]
                result = e(self.ctx, fold_state, data if e.needs_data else None)
                outcome.add(self._prefix(e, split), result.metrics, result.images, False)
            outcomes.append(outcome)
        if not self.stacked:
            return outcomes[0]
        out = Outcome(images=outcomes[0].images)
        for key in outcomes[0].scalars:
            out.scalars.update(scalar_record(key, np.asarray([o.scalars[key] for o in outcomes]), "fold"))
        for key in outcomes[0].arrays:
            out.arrays[key] = np.stack([o.arrays[key] for o in outcomes])
        return out
