"""Where a run's state comes from: the newest readable checkpoint, or a fresh initialisation
(from another run's parameters with ``trainer.init_from``).
"""

from __future__ import annotations

from typing import Any

import jax

from research.engine import init_from
from research.engine.run_dir import record_classes, set_aside_previous

RECORDS = (
    "metrics.jsonl",
    "plots",
    "eval.json",
    "tensorboard",
)  # what a fresh start would otherwise append to


def start_state(run: Any) -> tuple[Any, dict, bool]:
    """(state, checkpoint metadata, resumed) for ``run`` (a ``loop.Run``)."""
    cfg = run.cfg
    dataset = run.dataset
    if dataset is not None and dataset.class_names and jax.process_index() == 0:
        record_classes(run.run_dir, dataset.class_names)  # what the labels stand for, for the readers
    latest = run.ckpt.latest_step() if (run.ckpt and cfg.resume) else None
    run.compile_ahead(resumed=latest is not None, step=latest or 0)
    if latest is not None:
        restored = run.ckpt.restore_latest(run.target, run.feed.iterator)
        if restored is not None:
            state, meta, path = restored
            run.feed.restored()
            print(f"resuming from step {meta['step']} ({path})", flush=True)
            return state, meta, True
    if jax.process_index() == 0:  # records of an attempt killed before its first checkpoint
        set_aside_previous(run.run_dir, RECORDS, why="no checkpoint to resume from")
    state = run.programs.init(run.init_rng, run.example)
    if cfg.init_from.path:
        state = init_from.load(state, run.target, run.task.reusable, cfg.init_from, frozen=run.task.frozen)
    return state, {}, False
