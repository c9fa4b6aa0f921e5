"""Optuna searches through the CLI, training the digits MLP: pruning with a search stopped halfway
and rerun, trials that diverge, and two searches sharing one study."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from research.sweep.storage import sqlite_storage
from tests.conftest import DIGITS_FAST, TERMINAL_TRAIN, TINY, run_train, train_cmd

TRIAL_TIMEOUT_S = 120
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _study(cwd: Path, name: str) -> optuna.Study:
    storage = sqlite_storage(cwd / "runs" / "optuna" / name / "study.db")
    return optuna.load_study(study_name=name, storage=storage)


def _count(cwd: Path, name: str, states=FINISHED) -> int:
    if not (cwd / "runs" / "optuna" / name / "study.db").exists():
        return 0
    try:
        return sum(t.state in states for t in _study(cwd, name).trials)
    except KeyError:  # the study is being created
        return 0


def _results(cwd: Path, name: str) -> dict:
    sweeps = sorted(
        p for p in (cwd / "runs" / "optuna" / name).iterdir() if p.is_dir() and p.name[0].isdigit()
    )
    return yaml.safe_load((sweeps[-1] / "optimization_results.yaml").read_text())


PRUNED_SEARCH = (
    "-m",
    "+experiment=digits_mlp",
    "optimizer/schedule=constant",
    *TINY,
    "trainer.epochs=4",  # 4 evaluations per trial (one per epoch) to prune at
    "hparams_search=digits_optuna",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.study_name=pruned",
    "optimizer.learning_rate=tag(log, interval(1e-5, 3e-2))",  # wide: the slow learners are pruned
)


@pytest.mark.slow
def test_pruned_search_stopped_halfway_and_rerun_continues_its_study(tmp_path):
    first = subprocess.Popen(
        train_cmd(*PRUNED_SEARCH, "hydra.sweeper.n_trials=8", script=TERMINAL_TRAIN),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 6 * TRIAL_TIMEOUT_S
    while _count(tmp_path, "pruned") < 4 and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # Ctrl-C halfway through the 8 trials
    _, err = first.communicate(timeout=TRIAL_TIMEOUT_S)
    before = _study(tmp_path, "pruned").trials
    assert 4 <= sum(t.state in FINISHED for t in before) < 8, err[-2000:]
    assert all(t.state != TrialState.RUNNING for t in before)  # the interrupted trial is failed

    run_train(*PRUNED_SEARCH, "hydra.sweeper.n_trials=4", cwd=tmp_path, timeout=6 * TRIAL_TIMEOUT_S)
    trials = _study(tmp_path, "pruned").trials
    assert [t.number for t in trials] == list(range(len(before) + 4))  # the same study, 4 more trials
    assert [t.params for t in trials[: len(before)]] == [t.params for t in before]
    assert all(t.state in FINISHED for t in trials[len(before) :])
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in trials]
    for t in pruned:
        steps = sorted(t.intermediate_values)  # one report per epoch: the first is an epoch's steps
        summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert summary["pruned"] is True and summary["steps"] == steps[-1] < 4 * steps[0]  # before the end
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert _results(tmp_path, "pruned")["best_value"] == pytest.approx(max(t.value for t in complete))


@pytest.mark.slow
def test_a_search_whose_trials_diverge_completes_with_a_finite_best(tmp_path):
    proc = run_train(
        "-m",
        *DIGITS_FAST,
        "optimizer=sgd",
        "hparams_search=digits_random",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.study_name=diverge",
        "optimizer.learning_rate=tag(log, interval(1e-2, 1e3))",  # SGD on digits: NaN from ~30 on
        cwd=tmp_path,
        timeout=6 * TRIAL_TIMEOUT_S,
    )
    trials = _study(tmp_path, "diverge").trials
    assert len(trials) == 6
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and complete and len(failed) + len(complete) == 6
    assert min(t.params["optimizer.learning_rate"] for t in failed) > max(
        t.params["optimizer.learning_rate"] for t in complete
    )
    assert proc.stderr.count("error: loss became nan") == len(failed)
    best = _results(tmp_path, "diverge")["best_value"]
    assert math.isfinite(best) and best == pytest.approx(max(t.value for t in complete))


@pytest.mark.slow
def test_two_searches_on_one_storage_run_distinct_trials(tmp_path):
    search = ("-m", *DIGITS_FAST, "hparams_search=digits_optuna", "hydra.sweeper.n_trials=3")
    workers = [
        subprocess.Popen(
            train_cmd(*search), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors = [w.communicate(timeout=8 * TRIAL_TIMEOUT_S)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    trials = _study(tmp_path, "digits_mlp_tpe").trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
