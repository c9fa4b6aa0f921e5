"""Hydra's side of the project's Optuna sweeper: ``hydra/sweeper=optuna`` (conf/hydra/sweeper/optuna.yaml).

Hydra imports every plugin module at start-up, so this one stays light: Optuna and the
search itself (``research.sweep.search``) load only when a sweep starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    """Ask/tell over an Optuna study; see research/sweep/search.py for what a sweep does."""

    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: str,
        n_trials: int,
        n_jobs: int,
        max_resamples: int,
        sampler: DictConfig,
        pruner: DictConfig,
        params: DictConfig | None = None,
    ) -> None:
        # sampler and pruner arrive as configs (_recursive_: false): each trial seeds its own sampler.
        self.cfg = OmegaConf.create(
            {
                "study_name": study_name,
                "storage": storage,
                "direction": direction,
                "n_trials": n_trials,
                "n_jobs": n_jobs,
                "max_resamples": max_resamples,
                "sampler": sampler,
                "pruner": pruner,
                "params": params or {},
            }
        )
        self.launcher: Any = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from research.sweep.search import Search

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        Search(self.cfg, self.launcher, sweep_dir).run(arguments)
