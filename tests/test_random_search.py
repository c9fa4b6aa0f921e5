"""``hparams_search=digits_random``: Optuna's random search over the digits MLP, maximising
validation accuracy, as the README's Sweeps section promises."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from research.sweep.storage import sqlite_storage
from tests.conftest import DIGITS_FAST, run_train

SPACE = {
    "optimizer.learning_rate": lambda v: 1e-4 <= v <= 3e-2,
    "data.batch_size": lambda v: v in (16, 32, 64, 128),
    "model.dropout": lambda v: 0.0 <= v <= 0.5,
    "model.activation": lambda v: v in ("relu", "gelu", "tanh"),
}


def _config_value(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


@pytest.mark.slow
def test_digits_random_samples_its_space_and_writes_the_best_trial(tmp_path: Path) -> None:
    run_train("-m", *DIGITS_FAST, "hparams_search=digits_random", "hydra.sweeper.n_trials=3", cwd=tmp_path)
    folder = tmp_path / "runs" / "optuna" / "digits_mlp_random"  # the study is named <experiment>_random
    study = optuna.load_study(study_name="digits_mlp_random", storage=sqlite_storage(folder / "study.db"))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3
    for trial in trials:
        assert set(trial.params) == set(SPACE)
        assert all(SPACE[k](v) for k, v in trial.params.items()), trial.params

    (sweep,) = [p for p in folder.iterdir() if p.is_dir()]
    runs = {}  # each trial's run: its sampled values as its config holds them -> its val/accuracy
    for run in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        sampled = tuple(sorted((k, _config_value(config, k)) for k in SPACE))
        runs[sampled] = json.loads((run / "summary.json").read_text())["val/accuracy"]
    assert runs == {tuple(sorted(t.params.items())): t.value for t in trials}  # the value is val/accuracy

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(t.value for t in trials))
    assert results["best_params"] == study.best_params
