"""A finished or running run's checkpoints, opened for reading: restore one, evaluate it.

Reading never writes. The layout (mesh, state shapes and shardings) is rebuilt from the
task and the val/test split, so the train split is never read or placed on a device,
and the checkpoint directory is opened read-only: nothing of the run directory changes,
whatever its saved settings say (``trainer.resume=false`` belongs to training alone).
A restored state holds the weights ``trainer.eval_weights`` names in the model's place (the
weight average, when the run kept one: ``averaging.py``), so every reader uses what the
run's own evaluation used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax

from research.absl_logging import absl_errors_only
from research.data.base import Dataset
from research.engine import averaging
from research.engine import feed as feeds
from research.engine.api import Evaluator, Task
from research.engine.checkpoint import Checkpointer
from research.engine.evaluation import Evaluation, Outcome
from research.engine.orbax_reads import saved_shapes, shape_mismatches
from research.engine.replicas import Replicas
from research.engine.run_dir import recorded_classes
from research.engine.settings import TrainerConfig
from research.engine.sharding import make_mesh, state_shardings
from research.engine.steps import Programs
from research.errors import ConfigError
from research.models.stacking import layout_hint
from research.optim import param_path


class SavedRun:
    """The checkpoints of ``run_dir`` in the layout of ``task`` over ``dataset``, read-only."""

    def __init__(
        self,
        task: Task,
        dataset: Dataset | None,
        trainer: TrainerConfig,
        *,
        seed: int,
        mesh_sizes: dict,
        run_dir: Path,
        replicas: Replicas,
    ):
        self.task, self.dataset, self.trainer, self.replicas = task, dataset, trainer, replicas
        self.run_dir = Path(run_dir)
        _check_classes(self.run_dir, dataset)
        self.mesh = make_mesh(mesh_sizes)
        example = feeds.example_spec(dataset, "test") if dataset is not None else None
        abstract = replicas.abstract_state(task.init, seed, example)
        self.shardings = state_shardings(
            self.mesh, abstract, mesh_sizes.get("rules"), leading_axes=int(replicas.vmapped)
        )
        self.target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, self.shardings
        )
        with absl_errors_only():  # Orbax announces read-only mode at WARNING
            self.ckpt = Checkpointer(self.run_dir / "checkpoints", "", "max", 1, False, read_only=True)

    def choose(self, choice: str) -> int:
        """The step ``checkpoint=best|latest|<step>`` names, or one line listing the saved ones."""
        steps = self.ckpt.steps()
        if not steps:
            raise ConfigError(f"{self.run_dir} has no checkpoint to read ({self._why_none()})")
        if choice == "latest":
            return steps[-1]
        if choice == "best":
            best = self.ckpt.best_step_saved()
            return best if best in steps else steps[-1]
        if choice.isdigit() and int(choice) in steps:
            return int(choice)
        raise ConfigError(f"checkpoint={choice!r}: choose best, latest or one of the saved steps {steps}")

    def _why_none(self) -> str:
        """Why a run has no checkpoint, by its summary: pruned by a search, saving off, or not yet."""
        try:
            summary = json.loads((self.run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            summary = {}
        if summary.get("pruned"):
            step, reason = summary.get("steps"), summary.get("reason")
            return f"a search pruned it at step {step}, before any checkpoint ({reason})"
        if summary:
            return "it was trained with trainer.checkpoint.enabled=false"
        return "its training has saved none yet"

    def restore(self, step: int) -> Any:
        """The state of checkpoint ``step`` (replicas stacked) with the evaluated weights in the model's
        place, or one line saying what does not fit."""
        state_dir = self.ckpt.state_dir(step)
        mismatched = shape_mismatches(state_dir, self.target)
        if mismatched:
            _check_layout(state_dir, self.target)
            raise ConfigError(
                f"the checkpoint {state_dir} does not fit this data and model ({'; '.join(mismatched[:4])}): "
                "the data must have the run's input shape and number of classes (check data=...)"
            )
        state, _ = self.ckpt.restore(step, self.target)
        return averaging.in_front(self.task, state, self.trainer.eval_weights)

    def replica(self, state: Any, index: int) -> Any:
        """Replica ``index`` of a state with several (trainer.num_seeds, a grid); a single run as is."""
        if not self.replicas.vmapped:
            if index:
                raise ConfigError(f"replica={index}: the run trained one replica (replica=0)")
            return state
        count = self.replicas.count
        if index >= count:
            raise ConfigError(f"replica={index}: the run trained {count} replicas (0..{count - 1})")
        return jax.tree.map(lambda a: a[index], state)

    def evaluate(self, state: Any, step: int, evaluators: dict[str, Evaluator], split: str) -> Outcome:
        """Every evaluator scheduled for the end, with its end-of-run reports, on ``split``."""
        programs = Programs(
            self.task,
            feeds.MemoryFeed.gather,
            self.replicas,
            per_seed_data=True,
            state_sharding=self.shardings,
            unoptimized=self.trainer.unoptimized,
        )
        # A final pass consults no schedule: the training interval does not matter here.
        evaluation = Evaluation(
            evaluators, self.dataset, self.mesh, programs, self.replicas, eval_every=1,
            weights=self.trainer.eval_weights, in_front=True,
        )  # fmt: skip
        return evaluation.final(state, step, split)

    def close(self) -> None:
        self.ckpt.close()


def _check_classes(run_dir: Path, dataset: Dataset | None) -> None:
    """The data's classes are the run's (``classes.json``): as many under other names (an image
    folder with a class renamed or swapped) would load and score under the wrong names. Another
    count is left to the checkpoint's shape check, which says which layer differs."""
    recorded = recorded_classes(run_dir)
    now = [] if dataset is None else list(dataset.class_names)
    if recorded and len(recorded) == len(now) and recorded != now:
        raise ConfigError(
            f"{run_dir} was trained on the classes {', '.join(recorded)}; the data now has "
            f"{', '.join(now)}: read it with data whose classes are the run's"
        )


def _check_layout(state_dir: Path, target: Any) -> None:
    """A checkpoint whose blocks are stacked where the model unrolls them (or the reverse) is one
    line naming ``model.scan_layers`` as the run had it (``trainer.init_from`` converts instead)."""
    hint = layout_hint(
        saved_shapes(state_dir), [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(target)]
    )
    if hint is not None:
        raise ConfigError(
            f"the checkpoint {state_dir} holds its layers in the other layout: read it with {hint} "
            "(as it was trained), or load it into this layout with trainer.init_from"
        )
