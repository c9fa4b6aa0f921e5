"""Using a saved run without training it: restore a checkpoint and evaluate it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from research.engine.checkpoint import shape_mismatches
from research.engine.loop import Run
from research.engine.replicas import Replicas
from research.errors import ConfigError


def restore(run: Run, step: int) -> Any:
    """The state of checkpoint ``step`` in this run's layout, or one line saying what does not fit."""
    state_dir = run.ckpt.state_dir(step)
    mismatched = shape_mismatches(state_dir, run.abstract)
    if mismatched:
        raise ConfigError(
            f"the checkpoint {state_dir} does not fit this data and model ({'; '.join(mismatched[:4])}): "
            "the data must have the run's input shape and number of classes (check data=...)"
        )
    state, _ = run.ckpt.restore(step, run.target)
    return state


def open_run(built: Any, run_dir: Path, seed: int, mesh_sizes: dict, replicas: Replicas) -> Run:
    """The run's layout (mesh, shardings, evaluators) over its checkpoint directory, for restoring."""
    trainer = built.trainer
    trainer.checkpoint = {**trainer.checkpoint, "enabled": True}
    evaluators = {**built.task.evaluators(), **built.evaluators}
    return Run(built.task, built.dataset, trainer, seed, mesh_sizes, run_dir, replicas, evaluators)


def restore_saved(
    built: Any,
    run_dir: Path,
    *,
    seed: int,
    mesh_sizes: dict,
    replicas: Replicas,
    choose: Callable[[list[int], int | None], int],
) -> tuple[Any, int]:
    """(state, step) of the checkpoint ``choose`` picks, for inference outside the engine (sampling).

    With several replicas (trainer.num_seeds) the state keeps its leading replica axis.
    """
    run = open_run(built, run_dir, seed, mesh_sizes, replicas)
    step = choose(run.ckpt.steps(), run.ckpt.best_step_saved())
    state = restore(run, step)
    run.ckpt.close()
    return state, step


def evaluate_saved(
    built: Any,
    run_dir: Path,
    *,
    seed: int,
    mesh_sizes: dict,
    replicas: Replicas,
    choose: Callable[[list[int], int | None], int],
    split: str,
) -> tuple[dict, int]:
    """Every final evaluator of the run on ``split`` for the checkpoint ``choose`` picks."""
    from research.engine.writers import save_png

    run = open_run(built, run_dir, seed, mesh_sizes, replicas)
    step = choose(run.ckpt.steps(), run.ckpt.best_step_saved())
    state = restore(run, step)
    outcome = run.evaluation.run(state, step, run.evaluation.final_names(), split, final=True)
    run.ckpt.close()
    for key, image in outcome.images.items():
        path = run_dir / "plots" / "eval" / f"{key.replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, image)
    arrays = {k: np.asarray(v).tolist() for k, v in outcome.arrays.items()}
    return {**outcome.scalars, **arrays}, step
