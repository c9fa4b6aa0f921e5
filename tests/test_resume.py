"""Resume: a run killed with SIGKILL and started again ends with the parameters of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, TINY, run_train, train_cmd

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


def _final_state(run_dir: Path) -> dict:
    import orbax.checkpoint as ocp

    ckpts = run_dir / "checkpoints"
    last = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    with ocp.CheckpointManager(ckpts.absolute(), item_names=("state", "meta", "data")) as manager:
        restored = manager.restore(last, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]


def _flat(tree) -> dict:
    import jax

    def plain(v):
        return np.asarray(
            jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v
        )

    return {jax.tree_util.keystr(k): plain(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _latest_checkpoint(run_dir: Path) -> int:
    ckpts = run_dir / "checkpoints"
    steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.exists() else []
    return max(steps, default=0)


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(*ARGS, f"hydra.run.dir={straight}")

    proc = subprocess.Popen(
        train_cmd(*ARGS, f"hydra.run.dir={killed}"),
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while _latest_checkpoint(killed) < 120 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _latest_checkpoint(killed)
    summary_before = killed / "summary.json"
    if summary_before.exists():
        pytest.skip("the run finished before it could be killed: machine too fast for this test's pacing")
    assert 0 < killed_at < 400

    run_train(*ARGS, f"hydra.run.dir={killed}")
    a, b = _flat(_final_state(straight)), _flat(_final_state(killed))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "a step was logged twice after resuming"
    assert json.loads((killed / "summary.json").read_text())["steps"] == 400


def test_nan_loss_stops_and_keeps_last_good_checkpoint(run_dir: Path) -> None:
    run_train(
        "+experiment=digits_mlp",
        "optimizer/schedule=constant",
        "trainer.max_steps=40",
        "trainer.eval_every=20",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    good = _flat(_final_state(run_dir))
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
    assert _latest_checkpoint(run_dir) == 40
    after = _flat(_final_state(run_dir))
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
    a, b = _flat(_final_state(straight)), _flat(_final_state(resumed))
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
