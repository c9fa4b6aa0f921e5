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

from omegaconf import DictConfig, OmegaConf

from research.engine.settings import TrainerConfig
from research.errors import ConfigError
from research.paths import CONF_DIR

# config groups whose keys are the arguments of their _target_ (data: a user's own loader too)
TARGET_GROUPS = ("data", "model", "task")
IMPORTED_GROUPS = TARGET_GROUPS  # config groups whose _target_ must import

# key, types accepted, predicate on the value, what the predicate requires
CHECKS: list[tuple[str, tuple, Any, str]] = [
    ("seed", (int,), lambda v: v >= 0, "a non-negative integer"),
    ("data.batch_size", (int,), lambda v: v > 0, "a positive integer"),
    ("data.eval_batch_size", (int,), lambda v: v > 0, "a positive integer"),
    ("data.val_fraction", (int, float), lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.learning_rate", (int, float), lambda v: v > 0, "a positive number"),
]


def check(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is missing, mistyped or out of range
    (the trainer's by its schema, ``research/engine/settings.py``).
    """
    for key, types, ok, requirement in CHECKS:
        node = OmegaConf.select(cfg, key, default="__absent__", throw_on_missing=False)
        if node == "__absent__":
            continue
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is required: set it on the command line ({key}=...)")
        if isinstance(node, bool) or not isinstance(node, types) or not ok(node):
            raise ConfigError(f"{key} must be {requirement}, got {node!r}")
    if OmegaConf.select(cfg, "optimizer.prune") is not None and OmegaConf.select(cfg, "trainer.vmap_over"):
        raise ConfigError(
            "optimizer.prune does not combine with trainer.vmap_over (the replica's learning-rate factor "
            "would scale the step that lands weights on zero): run the rates one after another"
        )
    if "trainer" in cfg:
        trainer_settings(cfg)
    for group in IMPORTED_GROUPS:
        target = _target(group, cfg.get(group))
        if group in TARGET_GROUPS and target is not None:
            _check_parameters(group, cfg.get(group), target)


def trainer_settings(cfg: DictConfig) -> TrainerConfig:
    """``cfg.trainer`` as the typed settings the engine reads, or one ConfigError line."""
    return TrainerConfig.from_dict(OmegaConf.to_container(cfg.trainer, resolve=True))


def _target(group: str, node: Any) -> Any:
    """The object ``<group>._target_`` names (None without one), or one line saying it cannot be
    imported: a class defined in a notebook or a script (``__main__``) exists only in that process.
    """
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    try:
        return import_target(node._target_)
    except Exception:  # noqa: BLE001 - any import failure is the same bad _target_ to the user
        where = (
            ": it was defined in a notebook or script; open the run in a process that defines it "
            "(research.Experiment.open), or move it into a module"
            if str(node._target_).startswith("__main__.")
            else ""
        )
        raise ConfigError(f"{group}._target_={node._target_!r} cannot be imported{where}") from None


def import_target(name: str) -> Any:
    """The object a ``_target_`` names, as Hydra finds it, without the error Hydra logs first when it
    cannot (the caller's one line says it).
    """
    import logging

    from hydra.utils import get_object

    logger = logging.getLogger("hydra.utils")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return get_object(name)
    finally:
        logger.setLevel(level)


def _check_parameters(group: str, node: DictConfig, target: Any) -> None:
    """Every key of ``node`` is a parameter of its ``_target_``: a recipe's ``model.channels``
    left over after ``model=resnet`` is one line here, not a TypeError inside the first trace.
    """
    import inspect

    # NNX module classes hide __init__'s signature behind their metaclass: read it directly.
    params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [key for key in node if not str(key).startswith("_") and key not in params]
    if unknown:  # all of them at once: data._target_=<a loader> leaves every key of the group before
        keys, removal = ", ".join(f"{group}.{k}" for k in unknown), " ".join(f"~{group}.{k}" for k in unknown)
        verb, it = ("is not a parameter", "it") if len(unknown) == 1 else ("are not parameters", "them")
        raise ConfigError(
            f"{keys} {verb} of {node._target_} (a recipe may have set {it} "
            f"for another {group}): remove {it} with {removal}, or see conf/{group}/"
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
    """The ``${run_id:}`` resolver, and the trainer schema as the ``trainer`` group's ``default``."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="trainer", name="default", node=TrainerConfig)


def compose_train(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m research.train <overrides>`` runs, composed in this process.

    For tests and benchmarks that call ``research.experiment.run`` or ``build`` directly.
    """
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def saved_run_dir(path: str | Path) -> Path:
    """The directory of a training run that a command reads (evaluate, export, ...), checked."""
    run_dir = Path(path).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory {run_dir} (run=<the run directory of a training run>)")
    register_resolvers()
    return run_dir


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """A run's saved config with ``group=choice``, ``a.b=value`` and ``+evaluators=...`` overrides."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        raise ConfigError(
            f"no run in {run_dir}: looked for {path} (run=<the run directory of a training run>)"
        )
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is the same damaged file to the user
        raise ConfigError(
            f"{path} cannot be read ({type(e).__name__}): the run's config is damaged"
        ) from None
    return apply_overrides(cfg, overrides, f"see {path}")


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], where: str = "") -> DictConfig:
    """``group=choice``, ``a.b=value`` and ``+evaluators=...`` on a composed config, in place (a saved
    run's, or one a notebook holds); ``where`` says where its keys can be read.
    """
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+")
        if key == "evaluators":  # evaluators=a or +evaluators=[a,b]: added to the run's own
            cfg.evaluators = OmegaConf.merge(cfg.get("evaluators") or {}, _evaluator_configs(value))
        elif "." not in key:  # a config group choice: take that group's node from the config tree
            composed = compose_train([override])
            if key not in composed:
                raise ConfigError(f"{key}={value}: no such config group")
            cfg[key] = composed[key]
        elif OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            hint = f" ({where})" if where else ""
            raise ConfigError(f"unknown config key {key!r} in the run's config{hint}")
        else:
            import yaml

            OmegaConf.update(cfg, key, yaml.safe_load(value))
    return cfg


def _evaluator_configs(value: str) -> Any:
    """The ``evaluators`` node that ``+evaluators=<value>`` composes, or one line naming the choices."""
    from hydra.errors import HydraException

    try:
        return compose_train([f"+evaluators={value}"]).evaluators
    except HydraException:
        names = sorted(p.stem for p in (CONF_DIR / "evaluators").glob("*.yaml"))
        raise ConfigError(f"evaluators={value}: choose among {names} (conf/evaluators/)") from None
