"""How a run starts and stops: its settings, when it saves, resume or init, and leaving on a signal."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from research.engine import reuse
from research.engine.preemption import Interrupted, Preempted, PreemptionFlag, requeue_if_slurm


@dataclasses.dataclass
class TrainerConfig:
    epochs: int = 30
    max_steps: int | None = None
    steps_per_call: int = 16
    log_every: int = 32
    eval_every: int | None = None
    checkpoint: dict = dataclasses.field(
        default_factory=lambda: {
            "enabled": True,
            "every": None,
            "every_s": 600.0,
            "keep_best": 2,
            "async_save": True,
        }
    )
    early_stopping: dict = dataclasses.field(
        default_factory=lambda: {"metric": None, "mode": None, "patience": None, "min_delta": 0.0}
    )
    init_from: dict = dataclasses.field(
        default_factory=lambda: {"path": None, "include": [".*"], "exclude": [], "strict": False}
    )
    resume: bool = True
    num_seeds: int = 1
    vmap_over: str | None = None
    vmap_values: list = dataclasses.field(default_factory=list)
    cv_folds: int | None = None
    cv_fold: int | None = None
    cv_refit: bool = False
    compile_cache: str | None = None
    profile: bool = False
    profile_steps: list = dataclasses.field(default_factory=lambda: [16, 48])
    progress: bool = True
    plots: bool = True
    unoptimized: list = dataclasses.field(default_factory=lambda: ["init"])


class SavePolicy:
    """When to checkpoint: every ``every`` steps and/or ``every_s`` seconds, and whenever forced
    (the end, early stopping, preemption, Ctrl-C). A short run saves once, at its end.
    """

    def __init__(self, ckpt_cfg: dict, eval_every: int):
        self.every = ckpt_cfg.get("every")
        self.every_s = ckpt_cfg.get("every_s")
        self.last = time.monotonic()

    @property
    def intervals(self) -> list[int]:
        """Step intervals that calls must end on."""
        return [int(self.every)] if self.every else []

    def due(self, step: int, forced: bool) -> bool:
        by_time = self.every_s is not None and time.monotonic() - self.last >= float(self.every_s)
        if jax.process_count() > 1:  # every process must take part in a save: process 0 decides
            from jax.experimental import multihost_utils

            by_time = bool(multihost_utils.broadcast_one_to_all(np.int32(by_time)))
        return forced or by_time or bool(self.every and step % int(self.every) == 0)

    def saved(self) -> None:
        self.last = time.monotonic()


PREVIOUS = ("checkpoints", "metrics.jsonl", "summary.json", "plots", "eval.json")


def set_aside_previous(run_dir: Path) -> Path | None:
    """With ``trainer.resume=false`` in a used run directory: move the earlier run's files into
    ``replaced/<time>/`` (nothing saved is lost) so the new run starts from nothing.
    """
    present = [name for name in PREVIOUS if (run_dir / name).exists()]
    if not present:
        return None
    aside = run_dir / "replaced" / time.strftime("%Y-%m-%d_%H-%M-%S")
    aside.mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.move(str(run_dir / name), str(aside / name))
    print(f"trainer.resume=false: the earlier run's files are moved to {aside}", flush=True)
    return aside


def start_state(run: Any, cfg: TrainerConfig) -> tuple[Any, dict, bool]:
    """(state, checkpoint metadata, resumed): the newest readable checkpoint, or a fresh init
    (from another run's parameters with ``trainer.init_from``).
    """
    latest = run.ckpt.latest_step() if (run.ckpt and cfg.resume) else None
    run.compile_ahead(resumed=latest is not None, step=latest or 0)
    if latest is not None:
        restored = run.ckpt.restore_latest(run.target, run.feed.iterator)
        if restored is not None:
            state, meta, path = restored
            if run.feed.kind == "stream":
                run.feed.restored()
            print(f"resuming from step {meta['step']} ({path})", flush=True)
            return state, meta, True
    state = run.programs.init(run.init_rng, run.example)
    if cfg.init_from.get("path"):
        state = reuse.init_from(state, run.target, run.task.reusable, **cfg.init_from, frozen=run.task.frozen)
    return state, {}, False


def leave_preempted(run: Any, preempt: PreemptionFlag, writers: Any, step: int) -> None:
    """The checkpoint of ``step`` is saved: close everything and raise what the CLI reports."""
    if run.ckpt:
        run.ckpt.close()
    writers.close()  # before the requeue: Slurm answers it with a SIGTERM that would cut W&B short
    requeued = not preempt.interrupted and requeue_if_slurm()
    if preempt.interrupted:
        raise Interrupted(f"interrupted at step {step}; checkpoint saved{_resume_hint()}")
    raise Preempted(
        f"preempted at step {step}; checkpoint saved" + ("; job requeued" if requeued else _resume_hint())
    )


def _resume_hint() -> str:
    if os.environ.get("SLURM_JOB_ID"):
        return "; the run resumes when Slurm restarts the job (or rerun the same command)"
    return "; rerun the same command to resume"
