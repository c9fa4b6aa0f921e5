"""Resume: a run killed with SIGKILL and started again ends with the parameters of an uninterrupted run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoints import final_state, kill_after_checkpoint, latest_checkpoint
from tests.conftest import TINY, run_train

# Slow enough per step (one step per call, a metrics line per step) to be killed in the middle.
ARGS = (
    "+experiment=digits_mlp",
    "optimizer/schedule=constant",
    "trainer.max_steps=400",
    "trainer.steps_per_call=1",
    "trainer.log_every=1",
    "trainer.eval_every=40",
    *TINY,
)


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(*ARGS, f"hydra.run.dir={straight}")

    kill_after_checkpoint(ARGS, killed, 120)
    killed_at = latest_checkpoint(killed)
    summary_before = killed / "summary.json"
    if summary_before.exists():
        pytest.skip("the run finished before it could be killed: machine too fast for this test's pacing")
    assert 0 < killed_at < 400

    run_train(*ARGS, f"hydra.run.dir={killed}")
    a, b = final_state(straight), final_state(killed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "a step was logged twice after resuming"
    assert json.loads((killed / "summary.json").read_text())["steps"] == 400


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_finishes_like_an_uninterrupted_run(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_train(*ARGS, f"hydra.run.dir={straight}")
    code, err = kill_after_checkpoint(ARGS, stopped, 80, sig=signal.SIGINT)
    if (stopped / "summary.json").exists():
        pytest.skip(
            "the run finished before it could be interrupted: machine too fast for this test's pacing"
        )
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 130 and len(lines) == 1, err
    assert lines[0].startswith("error: interrupted at step ") and "checkpoint saved" in lines[0]
    stopped_at = int(lines[0].split("step ")[1].split(";")[0])
    assert latest_checkpoint(stopped) == stopped_at, "the checkpoint is of the step it stopped at"

    run_train(*ARGS, f"hydra.run.dir={stopped}")
    a, b = final_state(straight), final_state(stopped)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(run_dir: Path) -> None:
    run_train(
        "+experiment=digits_mlp",
        "optimizer/schedule=constant",
        "trainer.max_steps=40",
        "trainer.eval_every=20",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    good = final_state(run_dir)
    proc = run_train(
        "+experiment=digits_mlp",
        "optimizer/schedule=constant",
        "trainer.max_steps=80",
        "trainer.eval_every=20",
        "optimizer.learning_rate=1e30",
        *TINY,
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "loss became" in proc.stderr and "at step 4" in proc.stderr and "step 40" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert latest_checkpoint(run_dir) == 40
    after = final_state(run_dir)
    for key in good:
        np.testing.assert_array_equal(good[key], after[key])


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
    a, b = final_state(straight), final_state(resumed)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_early_stopping_stops_after_patience(run_dir: Path) -> None:
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
    assert summary["stopped_early"] is True and summary["steps"] == 30 and summary["best_step"] <= 30
