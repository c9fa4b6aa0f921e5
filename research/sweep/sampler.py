"""A sampler seeded afresh for every trial: ``seed + trial number``.

One seeded sampler per process makes two workers on one study draw the same points
(both start from the same seed). Trial numbers are handed out by the storage, so they
differ between workers; seeding each trial's draw with its number keeps a search
reproducible and makes concurrent workers propose different parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class SeedPerTrial(BaseSampler):
    """Delegates to ``make(seed + trial.number)``, one instance per trial (``make(None)`` if seed is None)."""

    def __init__(self, make: Callable[[int | None], BaseSampler], seed: int | None):
        self._make, self._seed = make, seed
        self._number: int | None = None
        self._sampler: BaseSampler | None = None

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if self._sampler is None or trial.number != self._number:
            seed = None if self._seed is None else self._seed + trial.number
            self._number, self._sampler = trial.number, self._make(seed)
        return self._sampler

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)
