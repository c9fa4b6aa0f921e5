"""Resume: a run stopped by SIGKILL, SIGTERM, SIGUSR1 or Ctrl-C and started again ends with the
parameters of an uninterrupted run; a NaN stops at the last good checkpoint; resume=false starts over.

The interrupted runs are endless (``ENDLESS``): only the signal ends them, so it always lands in
the middle, and the rerun that finishes them sets the real length, ``STEPS``.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoints import (
    ENDLESS,
    assert_same_final_state,
    checkpoint_steps,
    final_state,
    latest_checkpoint,
    logged_steps,
    signal_run,
)
from tests.conftest import TINY, run_train

STEPS = 400
# One step per call and a record per step: a signal is answered within a step.
BASE = (
    "+experiment=digits_mlp",
    "optimizer/schedule=constant",
    "trainer.steps_per_call=1",
    "trainer.log_every=1",
    *TINY,
)
FINISH = (*BASE, f"trainer.max_steps={STEPS}", "trainer.eval_every=40")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run every stopped-and-resumed run must equal."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run_train(*FINISH, f"hydra.run.dir={run_dir}")
    return run_dir


def _finish_and_compare(run_dir: Path, straight: Path) -> None:
    run_train(*FINISH, f"hydra.run.dir={run_dir}")
    assert_same_final_state(straight, run_dir)
    assert logged_steps(run_dir) == list(range(1, STEPS + 1)), "each step logged once, none missing"
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == STEPS


@pytest.mark.slow
def test_sigkill_then_rerun_matches_uninterrupted(tmp_path: Path, straight: Path) -> None:
    killed = tmp_path / "killed"
    stop = signal_run(
        (*BASE, ENDLESS, "trainer.checkpoint.every=40", f"hydra.run.dir={killed}"),
        lambda: latest_checkpoint(killed) >= 40,
        signal.SIGKILL,
    )
    assert stop.code == -signal.SIGKILL
    assert 40 <= latest_checkpoint(killed) < STEPS and latest_checkpoint(killed) % 40 == 0
    _finish_and_compare(killed, straight)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, code, what",
    [
        (signal.SIGTERM, 143, "preempted"),
        (signal.SIGUSR1, 143, "preempted"),
        (signal.SIGINT, 130, "interrupted"),
    ],
    ids=["SIGTERM", "SIGUSR1", "ctrl-c"],
)
def test_a_signal_saves_the_step_it_stopped_at_and_the_rerun_matches(
    sig: int, code: int, what: str, tmp_path: Path, straight: Path
) -> None:
    """Preemption (SIGTERM; SIGUSR1 ahead of a time limit) and Ctrl-C: save now, one line, exit code."""
    stopped = tmp_path / "stopped"
    # No periodic checkpoint: any checkpoint is the one the signal saved.
    args = (
        *BASE,
        ENDLESS,
        "trainer.eval_every=1000",
        "trainer.checkpoint.every=1000",
        f"hydra.run.dir={stopped}",
    )
    stop = signal_run(args, lambda: max(logged_steps(stopped), default=0) >= 5, sig)
    assert stop.code == code, stop.stderr
    assert len(stop.lines) == 1, stop.stderr
    match = re.fullmatch(
        rf"error: {what} at step (\d+); checkpoint saved; rerun the same command to resume", stop.lines[0]
    )
    assert match, stop.lines[0]
    step = int(match.group(1))
    assert 5 <= step < STEPS
    assert checkpoint_steps(stopped) == [step]
    assert logged_steps(stopped)[-1] == step and not (stopped / "summary.json").exists()
    _finish_and_compare(stopped, straight)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(run_dir: Path) -> None:
    args = ("+experiment=digits_mlp", "optimizer/schedule=constant", "trainer.eval_every=20", *TINY)
    run_train(*args, "trainer.max_steps=40", f"hydra.run.dir={run_dir}")
    good = final_state(run_dir)
    # Resumed from the good checkpoint with every update checked (trainer.blame_nonfinite).
    proc = run_train(
        *args,
        "trainer.max_steps=80",
        "optimizer.learning_rate=1e30",
        "trainer.blame_nonfinite=true",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # Step 41's loss is computed with the good parameters; its 1e30-sized update breaks step 42,
    # whose gradients are the first non-finite ones, in every layer group (research/watch.py).
    assert lines == [
        "error: loss became nan at step 42; the last good checkpoint (step 40) is kept; the gradient "
        "of head, hidden first went non-finite at update 42: lower optimizer.learning_rate or set "
        "optimizer.clip_norm"
    ], proc.stderr
    assert latest_checkpoint(run_dir) == 40
    after = final_state(run_dir)
    for key in good:
        np.testing.assert_array_equal(good[key], after[key], err_msg=key)


def test_streamed_data_resumes_from_the_saved_iterator(tmp_path: Path) -> None:
    """grain streaming: stop at 40, continue to 80 = one run of 80 steps (the iterator position is saved)."""
    args = (
        "+experiment=digits_mlp",
        "optimizer/schedule=constant",
        "data.in_memory=false",
        "trainer.eval_every=20",
        *TINY,
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_train(*args, "trainer.max_steps=80", f"hydra.run.dir={straight}")
    run_train(*args, "trainer.max_steps=40", f"hydra.run.dir={resumed}")
    run_train(*args, "trainer.max_steps=80", f"hydra.run.dir={resumed}")
    assert_same_final_state(straight, resumed)


@pytest.mark.slow
def test_resume_false_starts_over_in_the_same_run_dir(tmp_path: Path) -> None:
    """With trainer.resume=false the checkpoint already there is ignored: the run equals a fresh one.

    A resumed run would find the first run's checkpoint at the last step and train no further.
    """
    args = (
        "+experiment=digits_mlp",
        "optimizer/schedule=constant",
        "trainer.max_steps=40",
        "trainer.eval_every=20",
        *TINY,
    )
    again, fresh = tmp_path / "again", tmp_path / "fresh"
    run_train(*args, "optimizer.learning_rate=1e-2", f"hydra.run.dir={again}")
    run_train(*args, "trainer.resume=false", f"hydra.run.dir={again}")
    run_train(*args, f"hydra.run.dir={fresh}")
    assert_same_final_state(fresh, again)
    assert logged_steps(again) == logged_steps(fresh), "the record starts over too"
    (aside,) = (again / "replaced").iterdir()  # the first run's files are kept, not overwritten
    assert sorted(p.name for p in (aside / "checkpoints").iterdir()) == ["40"]
    assert logged_steps(aside) == logged_steps(fresh)


def test_a_relative_run_dir_resumes(tmp_path: Path) -> None:
    """The default run directory, runs/<name>/<time> (slurm-<job id> under Slurm), is relative."""
    args = ("+experiment=digits_mlp", "optimizer/schedule=constant", "trainer.eval_every=20", *TINY)
    run_train(*args, "trainer.max_steps=20", "hydra.run.dir=runs/relative", cwd=tmp_path)
    run_train(*args, "trainer.max_steps=40", "hydra.run.dir=runs/relative", cwd=tmp_path)
    assert logged_steps(tmp_path / "runs" / "relative") == [20, 40]


def test_early_stopping_stops_after_patience(run_dir: Path) -> None:
    """min_delta=1.0: no accuracy gain counts as progress, so the two evaluations after the first
    use up the patience; the best checkpoint is still the most accurate evaluation."""
    run_train(
        "+experiment=digits_mlp",
        "optimizer/schedule=constant",
        "trainer.max_steps=200",
        "trainer.eval_every=10",
        "trainer.early_stopping.patience=2",
        "trainer.early_stopping.min_delta=1.0",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["stopped_early"], summary["steps"]) == (True, 30)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = {r["step"]: r["val/accuracy"] for r in records if "val/accuracy" in r}
    assert list(evaluated) == [10, 20, 30]
    best = max(evaluated, key=lambda step: (evaluated[step], step))  # the newest of equals
    assert summary["best_step"] == best and summary["val/accuracy"] == evaluated[best]
