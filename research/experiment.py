"""The build step: the one place where config meets code.

``build`` turns a composed config into plain objects (dataset, task, trainer
settings); ``run`` hands them to the engine. Nothing below this module sees Hydra.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import jax
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from research import config as config_checks
from research import precision
from research.engine import distributed
from research.engine.loop import TrainerConfig, fit, total_steps
from research.engine.replicas import Replicas
from research.engine.writers import WandbWriter, Writers
from research.optim import make_optimizer


def build(cfg: DictConfig) -> tuple[Any, Any, TrainerConfig]:
    """(task, dataset or None, trainer config) for a composed config."""
    config_checks.check(cfg)
    logging.getLogger("absl").setLevel(logging.WARNING)  # TFDS and Orbax narrate every file at INFO
    data_cfg = cfg.get("data") or {}
    dataset = instantiate(data_cfg, _convert_="all") if "_target_" in data_cfg else None
    trainer = TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    extra = {}
    if cfg.get("env"):
        from research.envs import make as make_env

        extra["env"] = make_env(cfg.env)
    # Objects are passed to partials, not to instantiate(): its kwargs must be config values.
    make_task = instantiate(cfg.task, _partial_=True, _convert_="all")
    policy = precision.Policy(**(OmegaConf.to_container(cfg.precision) if cfg.get("precision") else {}))
    if precision.check_task_supports(make_task, policy):
        extra["precision"] = policy
    task = make_task(
        model=policy.model_factory(instantiate(cfg.model, _partial_=True, _convert_="all")),
        make_optimizer=replicas_of(cfg).optimizer(functools.partial(make_optimizer, cfg.optimizer)),
        total_steps=total_steps(trainer, dataset),
        dataset=dataset,
        **extra,
    )
    return task, dataset, trainer


def replicas_of(cfg: DictConfig) -> Replicas:
    """Seeds and learning-rate grid trained together in one program (trainer.num_seeds, vmap_over)."""
    return Replicas(
        num_seeds=int(cfg.trainer.num_seeds),
        key=cfg.trainer.get("vmap_over"),
        values=tuple(cfg.trainer.get("vmap_values") or ()),
        base_value=(cfg.get("optimizer") or {}).get("learning_rate"),
    )


def run(cfg: DictConfig, run_dir: Path, wandb_group: str | None = None) -> dict:
    """Train and evaluate one composed config in ``run_dir``; returns the summary."""
    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    task, dataset, trainer = build(cfg)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    primary = jax.process_index() == 0

    def writers_factory(resume_step: int | None, wandb_id: str | None) -> Writers:
        wandb = None
        if wandb_cfg and primary:
            settings = OmegaConf.to_container(wandb_cfg, resolve=True)
            settings["group"] = settings.get("group") or wandb_group
            wandb = WandbWriter(settings, run_dir, cfg.name, config_dict, cfg.get("tags") or [], wandb_id)
        return Writers(run_dir, primary, resume_step, wandb)

    return fit(
        task,
        dataset,
        trainer,
        seed=cfg.seed,
        mesh_sizes=OmegaConf.to_container(cfg.mesh),
        run_dir=run_dir,
        writers_factory=writers_factory,
        config_dict=config_dict,
        replicas=replicas_of(cfg),
    )
