"""A job's link to its Optuna trial: report the optimised metric at every evaluation, stop when pruned.

The sweeper gives each job the override ``++optuna.trial=<number>``. A job in the
sweeper's own process (Hydra's basic launcher) finds the live trial in ``LIVE``; a
job in another process (Slurm, submitit) opens the study from ``hydra.sweeper.storage``
with the pruner from ``hydra.sweeper.pruner``: both are in the job's Hydra config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from research.errors import ConfigError, TrialPruned

if TYPE_CHECKING:
    import optuna

TRIAL_KEY = "optuna.trial"  # the job config key that holds the trial number
LIVE: dict[tuple[str, int], optuna.Trial] = {}  # (study name, trial number) -> trial, for in-process jobs


def trial_number(cfg: DictConfig) -> int | None:
    """The Optuna trial this job runs, or None outside a search."""
    number = OmegaConf.select(cfg, TRIAL_KEY, default=None)
    return None if number is None else int(number)


def reporter(cfg: DictConfig) -> Callable[[int, dict], None] | None:
    """``on_eval(step, record)`` for the loop: reports ``cfg.optimized_metric`` and raises TrialPruned."""
    number = trial_number(cfg)
    if number is None:
        return None
    metric = cfg.get("optimized_metric")
    if not metric:
        raise ConfigError(
            "an Optuna search needs optimized_metric (e.g. val/accuracy) to report to its trials"
        )
    trial = find_trial(number)
    trial.set_user_attr("run_dir", _run_dir())  # where its checkpoints are: research.study lists it

    def on_eval(step: int, record: dict) -> None:
        value = record.get(metric)
        if value is None or not math.isfinite(value):
            return  # a NaN loss stops the run by itself; a missing metric is reported at the end
        trial.report(float(value), step)
        if trial.should_prune():
            raise TrialPruned(f"pruned at step {step} ({metric} {value:.4g})")

    return on_eval


def _run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def find_trial(number: int) -> optuna.Trial:
    """The live trial of this process's sweeper, else the trial opened from the study's storage."""
    from hydra.core.hydra_config import HydraConfig

    sweeper = HydraConfig.get().sweeper
    live = LIVE.get((sweeper.study_name, number))
    if live is not None:
        return live
    return open_trial(sweeper, number)


def open_trial(sweeper: DictConfig, number: int) -> optuna.Trial:
    """Trial ``number`` of the study in ``sweeper.storage``, judged by ``sweeper.pruner``."""
    import optuna
    from hydra.utils import instantiate

    from research.sweep.storage import open_storage

    storage = open_storage(sweeper.storage)
    if storage is None:
        raise ConfigError(
            "a job in another process cannot reach a study kept in memory: set hydra.sweeper.storage"
        )
    study = optuna.load_study(
        study_name=sweeper.study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # a job never samples: the sweeper set its parameters
        pruner=instantiate(sweeper.pruner),
    )
    study_id = storage.get_study_id_from_name(sweeper.study_name)
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))
