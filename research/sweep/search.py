"""One Optuna search: ask a trial, launch it as a Hydra job, tell Optuna the outcome.

- the study lives in ``storage``; rerunning the command runs ``n_trials`` more in it,
  and several commands on one storage share the study (each trial's sampler is seeded
  with ``seed + trial number``, and a proposal equal to an earlier trial's is asked again);
- each job reports its validation metric to its trial and the ``pruner`` may stop it
  (``research.sweep.trial``); it is recorded as pruned;
- a job that fails, or whose objective is NaN, is recorded as failed and the search goes on.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from research.errors import TrialPruned, UserError
from research.sweep import trial as job_trial
from research.sweep.sampler import SeedPerTrial
from research.sweep.space import check_search, overrides, split_arguments
from research.sweep.storage import open_storage

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class Search:
    """The ask/launch/tell cycle over one study, for the sweeper's config ``cfg`` (hydra.sweeper)."""

    def __init__(self, cfg: DictConfig, launcher: Any, sweep_dir: Path):
        check_search(cfg)
        self.cfg, self.launcher, self.sweep_dir = cfg, launcher, sweep_dir
        self.job_idx = 0

    def run(self, arguments: list[str]) -> optuna.Study:
        """Run ``n_trials`` trials (fewer if the space runs out); the best so far goes to RESULTS_FILE."""
        space, fixed = split_arguments(self.cfg.params or {}, arguments)
        study = self.open_study()
        log.info(
            f"Study {study.study_name} ({self.cfg.storage or 'in memory'}): {len(study.trials)} trials "
            f"so far, {self.cfg.n_trials} more"
        )
        ran = 0
        while ran < self.cfg.n_trials:
            batch = [self.ask(study, space) for _ in range(min(self.cfg.n_jobs, self.cfg.n_trials - ran))]
            batch = [t for t in batch if t is not None]
            if not batch:
                log.warning("every proposal repeats an earlier trial: the search space is exhausted")
                break
            self.run_batch(study, batch, fixed)
            ran += len(batch)
        write_results(study, self.sweep_dir / RESULTS_FILE)
        return study

    def open_study(self) -> optuna.Study:
        """The study in ``storage`` (created on first use), sampled with a per-trial seed."""
        sampler_cfg = OmegaConf.to_container(self.cfg.sampler, resolve=True)
        seed = sampler_cfg.pop("seed", None)
        sampler = SeedPerTrial(lambda s: instantiate(sampler_cfg, seed=s), seed)
        return optuna.create_study(
            study_name=self.cfg.study_name,
            storage=open_storage(self.cfg.storage),
            sampler=sampler,
            pruner=instantiate(self.cfg.pruner),
            direction=self.cfg.direction,
            load_if_exists=True,
        )

    def ask(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> optuna.Trial | None:
        """A trial whose parameters no earlier trial has (finished, pruned or running elsewhere)."""
        for _ in range(self.cfg.max_resamples + 1):
            trial = study.ask(space)
            twin = _earlier_twin(study, trial)
            if twin is None:
                return trial
            trial.set_user_attr("duplicate_of", twin)
            study.tell(trial, state=TrialState.FAIL)
            log.info(f"trial {trial.number} repeats trial {twin}: not run, asking again")
        return None

    def run_batch(self, study: optuna.Study, batch: list[optuna.Trial], fixed: list[str]) -> None:
        """Launch one job per trial (at once, as the launcher allows) and tell Optuna each outcome."""
        jobs = [
            [
                *fixed,
                *overrides(t.params),
                f"++{job_trial.TRIAL_KEY}={t.number}",
                f"hydra.sweep.subdir={t.number}",
            ]
            for t in batch
        ]
        for t in batch:
            job_trial.LIVE[(study.study_name, t.number)] = t
        told: set[int] = set()
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
            self.job_idx += len(jobs)
            for t, ret in zip(batch, returns, strict=True):
                state, value, note = outcome(ret)
                study.tell(t, value, state=state)
                told.add(t.number)
                log.info(f"trial {t.number} {state.name.lower()}{note}: {t.params}")
        finally:  # interrupted (Ctrl-C, a lost Slurm job): trials left running are recorded as failed
            for t in batch:
                job_trial.LIVE.pop((study.study_name, t.number), None)
                if t.number not in told:
                    study.tell(t, state=TrialState.FAIL)


def _earlier_twin(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of a lower-numbered trial with the same parameters that counts (not failed), if any."""
    for other in study.get_trials(deepcopy=False, states=TAKEN):
        if other.number < trial.number and other.params == trial.params:
            return other.number
    return None


def outcome(ret: JobReturn) -> tuple[TrialState, float | None, str]:
    """(state, objective, note for the log) of a finished job."""
    if ret.status == JobStatus.COMPLETED:
        value = ret.return_value
        if value is None:
            return TrialState.FAIL, None, " (the job reported an error)"
        if not math.isfinite(value):
            return TrialState.FAIL, None, f" (objective {value})"
        return TrialState.COMPLETE, float(value), f" {value:.4g}"
    error = ret._return_value  # the exception (reading .return_value re-raises it)
    if isinstance(error, TrialPruned):
        return TrialState.PRUNED, None, f" ({error})"
    if not isinstance(error, UserError):  # a bug, not a bad trial: keep its traceback in the log
        log.error("trial job raised", exc_info=error)
    return TrialState.FAIL, None, f" ({type(error).__name__}: {error})"


def write_results(study: optuna.Study, path: Path) -> None:
    """The best trial so far (of every run on this study) as YAML, as Hydra's Optuna sweeper wrote it."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        log.warning(f"no trial of study {study.study_name} has completed: no {path.name}")
        return
    best = study.best_trial
    OmegaConf.save(
        OmegaConf.create(
            {
                "name": "optuna",
                "best_trial": best.number,
                "best_params": best.params,
                "best_value": best.value,
            }
        ),
        path,
    )
    log.info(f"Best trial {best.number}: {best.value:.4g} {best.params} ({path})")
