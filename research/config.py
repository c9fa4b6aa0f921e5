"""Config checks and resolvers: what makes a bad value fail with one line before any work.

Hydra composes plain YAML without types, so ``data.batch_size=abc`` would reach the
code as a string. ``check`` validates the values every run relies on; group files
can add their own checks in code (e.g. the optimizer builder).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from research.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
TARGET_GROUPS = ("model", "task")  # config groups whose keys are the arguments of their _target_

# key, types accepted, predicate on the value, what the predicate requires
CHECKS: list[tuple[str, tuple, Any, str]] = [
    ("seed", (int,), lambda v: v >= 0, "a non-negative integer"),
    ("data.batch_size", (int,), lambda v: v > 0, "a positive integer"),
    ("data.eval_batch_size", (int,), lambda v: v > 0, "a positive integer"),
    ("data.val_fraction", (int, float), lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.learning_rate", (int, float), lambda v: v > 0, "a positive number"),
    ("trainer.epochs", (int,), lambda v: v > 0, "a positive integer"),
    ("trainer.max_steps", (int, type(None)), lambda v: v is None or v > 0, "a positive integer or null"),
    ("trainer.steps_per_call", (int,), lambda v: v > 0, "a positive integer"),
    ("trainer.log_every", (int,), lambda v: v > 0, "a positive integer"),
    ("trainer.eval_every", (int, type(None)), lambda v: v is None or v > 0, "a positive integer or null"),
    ("trainer.num_seeds", (int,), lambda v: v > 0, "a positive integer"),
    ("trainer.cv_folds", (int, type(None)), lambda v: v is None or v >= 2, "an integer >= 2 or null"),
    ("trainer.cv_fold", (int, type(None)), lambda v: v is None or v >= 0, "a fold index >= 0 or null"),
    (
        "trainer.early_stopping.mode",
        (str, type(None)),
        lambda v: v in ("max", "min", None),
        "max, min or null",
    ),
    (
        "trainer.checkpoint.every",
        (int, type(None)),
        lambda v: v is None or v > 0,
        "a positive integer or null",
    ),
    (
        "trainer.checkpoint.every_s",
        (int, float, type(None)),
        lambda v: v is None or v > 0,
        "a positive number of seconds or null",
    ),
    (
        "trainer.early_stopping.patience",
        (int, type(None)),
        lambda v: v is None or v > 0,
        "a positive integer or null",
    ),
    ("trainer.checkpoint.keep_best", (int,), lambda v: v > 0, "a positive integer"),
    (
        "trainer.unoptimized",
        (ListConfig,),
        lambda v: set(v) <= {"init", "train", "eval"},
        "a list of programs among init, train, eval",
    ),
]


def check(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is missing, mistyped or out of range."""
    for key, types, ok, requirement in CHECKS:
        node = OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False)
        if node == "__absent__":
            continue
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required: set it on the command line ({key}=...)")
        if isinstance(node, bool) or not isinstance(node, types) or not ok(node):
            raise ConfigError(f"{key} must be {requirement}, got {node!r}")
    for group in TARGET_GROUPS:
        _check_parameters(group, cfg.get(group))


def _check_parameters(group: str, node: Any) -> None:
    """Every key of ``node`` is a parameter of its ``_target_``: a recipe's ``model.channels``
    left over after ``model=resnet`` is one line here, not a TypeError inside the first trace.
    """
    import inspect

    from hydra.utils import get_object

    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        target = get_object(node._target_)
    except Exception:  # noqa: BLE001 - any import failure is the same bad _target_ to the user
        raise ConfigError(f"{group}._target_={node._target_!r} cannot be imported") from None
    # NNX module classes hide __init__'s signature behind their metaclass: read it directly.
    params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in node:
        if not str(key).startswith("_") and key not in params:
            raise ConfigError(
                f"{group}.{key} is not a parameter of {node._target_} (a recipe may have set it "
                f"for another {group}): remove it with ~{group}.{key}, or see conf/{group}/"
            )


def run_id() -> str:
    """A Slurm job's id (so a requeued job finds its run directory), else the launch time."""
    job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job and array_task:
        return f"slurm-{job}_{array_task}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)


def compose_train(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m research.train <overrides>`` runs, composed in this process.

    For tests and benchmarks that call ``research.experiment.run`` or ``build`` directly.
    """
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))
