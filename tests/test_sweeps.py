"""Sweeps through the CLI: a grid multirun compared with research.compare, and an Optuna search
that is interrupted and continued from its study storage."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from research import compare
from research.sweep.storage import sqlite_storage
from tests.checkpoints import signal_run
from tests.conftest import DIGITS_FAST as FAST
from tests.conftest import parse_table, run_train

STUDY = "digits_mlp_tpe"  # hparams_search=digits_optuna names its study <experiment name>_tpe
TRIAL_TIMEOUT_S = 120


def test_grid_sweep_gives_each_job_a_run_dir_and_compares(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    run_train("-m", *FAST, "optimizer.learning_rate=1e-2,1e-3", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    summaries = {}
    for job, lr in ((0, 1e-2), (1, 1e-3)):
        config = yaml.safe_load((sweep / str(job) / ".hydra" / "config.yaml").read_text())
        assert config["optimizer"]["learning_rate"] == lr
        summaries[lr] = json.loads((sweep / str(job) / "summary.json").read_text())

    compare.main([str(sweep), "--metrics", "test/accuracy,test/loss"])
    header, rows = parse_table(capsys.readouterr().out)
    assert header[:5] == ["#", "optimizer.learning_rate", "metric", "n", "mean"]
    assert (
        sorted((r["metric"], r["n"]) for r in rows) == [("test/accuracy", "1")] * 2 + [("test/loss", "1")] * 2
    )
    for cells in rows:
        summary = summaries[float(cells["optimizer.learning_rate"])]
        assert float(cells["mean"]) == pytest.approx(summary[cells["metric"]], rel=1e-3)
    assert (sweep / "compare" / "train_loss.png").stat().st_size > 0


def _study(cwd: Path):
    import optuna

    storage = sqlite_storage(str(cwd / "runs" / "optuna" / STUDY / "study.db"))
    return optuna.load_study(study_name=STUDY, storage=storage)


def _finished_trials(cwd: Path) -> int:
    return len(list((cwd / "runs" / "optuna" / STUDY).glob("*/*/summary.json")))


@pytest.mark.slow
def test_optuna_search_stopped_halfway_continues_the_same_study(tmp_path):
    import optuna

    search = ("-m", *FAST, "hparams_search=digits_optuna")
    stop = signal_run(  # Ctrl-C halfway through the 8 trials
        search,
        lambda: _finished_trials(tmp_path) >= 4,
        signal.SIGINT,
        cwd=tmp_path,
        timeout=4 * TRIAL_TIMEOUT_S,
    )
    # In a trial (it saves) or between two (the next one does not start): one line, exit code 130.
    assert stop.code == 130 and "Traceback" not in stop.stderr, stop.stderr[-2000:]
    assert stop.lines[-1].startswith("error: interrupted"), stop.stderr[-2000:]
    done_before = [t for t in _study(tmp_path).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 4 <= len(done_before) < 8, stop.stderr[-2000:]

    run_train(*search, "hydra.sweeper.n_trials=4", cwd=tmp_path, timeout=8 * TRIAL_TIMEOUT_S)
    study = _study(tmp_path)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == len(done_before) + 4  # the earlier trials are still there, 4 more ran
    assert {t.number for t in done_before} < {t.number for t in done}

    sweeps = sorted(p for p in (tmp_path / "runs" / "optuna" / STUDY).iterdir() if p.is_dir())
    results = yaml.safe_load((sweeps[-1] / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(t.value for t in done))
    assert results["best_params"] == study.best_params
