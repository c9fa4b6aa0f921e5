"""Checkpoints serve reuse: research.evaluate, trainer.init_from, and freezing with batch norm."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from research.engine.init_from import checkpoint_state_dir, read_arrays
from tests.checkpoints import latest_checkpoint
from tests.conftest import ROOT, TINY, run_train

CNN = ("+experiment=digits_cnn", "trainer.max_steps=40", "trainer.eval_every=20", *TINY)


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cnn") / "run"
    run_train(*CNN, f"hydra.run.dir={run_dir}")
    return run_dir


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "research.evaluate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_evaluate_reproduces_the_runs_test_metrics_exactly(cnn_run: Path) -> None:
    proc = evaluate(f"run={cnn_run}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((cnn_run / "summary.json").read_text())
    out = json.loads((cnn_run / "eval.json").read_text())
    assert out["checkpoint_step"] == summary["best_step"]
    test_keys = [k for k in summary if k.startswith("test/")]
    assert "test/accuracy" in test_keys and "test/confusion_matrix" in test_keys
    assert {k: out[k] for k in test_keys} == {k: summary[k] for k in test_keys}
    assert (cnn_run / "plots" / "eval" / "test_confusion_matrix.png").stat().st_size > 1000


def test_evaluate_bad_input_is_one_line(cnn_run: Path, tmp_path: Path) -> None:
    missing = evaluate(f"run={tmp_path / 'nowhere'}")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: no run directory {tmp_path / 'nowhere'} (run=<the run directory of a training run>)"
    ]
    step = evaluate(f"run={cnn_run}", "checkpoint=7")
    assert (
        step.returncode == 2
        and "checkpoint='7': choose best, latest or one of the saved steps" in step.stderr
    )
    other_classes = evaluate(f"run={cnn_run}", "data.classes=[0,1,2]")
    assert other_classes.returncode == 2, other_classes.stderr
    assert "params/head/kernel: (64, 10) -> (64, 3)" in other_classes.stderr
    assert len(other_classes.stderr.strip().splitlines()) == 1


def test_init_from_loads_the_body_and_reinitialises_a_head_of_another_size(
    cnn_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "five"
    proc = run_train(
        *CNN, "data.classes=[0,1,2,3,4]", f"trainer.init_from.path={cnn_run}", f"hydra.run.dir={run_dir}"
    )
    source = read_arrays(checkpoint_state_dir(cnn_run))  # the best state, wherever it is saved
    assert (
        "mismatched (re-initialised) 2: params/head/bias (10,) -> (5,), "
        "params/head/kernel (64, 10) -> (64, 5)" in proc.stdout
    )
    loaded = next(line for line in proc.stdout.splitlines() if line.strip().startswith("loaded"))
    assert "params/blocks/0/conv/kernel" in loaded and "model_state/blocks/0/norm/mean" in loaded
    summary = json.loads((run_dir / "summary.json").read_text())
    assert np.asarray(summary["test/confusion_matrix"]).shape == (5, 5)
    # The loaded start is the source's: with a zero learning rate nothing moves from it.
    frozen_dir = tmp_path / "still"
    run_train(
        *CNN,
        "data.classes=[0,1,2,3,4]",
        f"trainer.init_from.path={cnn_run}",
        "optimizer.learning_rate=1e-30",
        f"hydra.run.dir={frozen_dir}",
        "trainer.max_steps=1",
    )
    after = read_arrays(frozen_dir / "checkpoints" / "1" / "state")
    np.testing.assert_allclose(
        after["params/blocks/0/conv/kernel"], source["params/blocks/0/conv/kernel"], atol=1e-12
    )


def test_init_from_an_incompatible_checkpoint_lists_the_mismatched_paths(
    cnn_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "mlp"
    proc = run_train(
        "+experiment=digits_mlp",
        "trainer.max_steps=4",
        *TINY,
        f"trainer.init_from.path={cnn_run}",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: trainer.init_from: the checkpoint {cnn_run / 'checkpoints'}")
    assert "params/head/kernel (64, 10) -> (256, 10)" in line


def test_freeze_keeps_frozen_parameters_and_their_batch_norm_statistics_bit_identical(
    cnn_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "frozen"
    run_train(
        *CNN, f"trainer.init_from.path={cnn_run}", "optimizer.freeze=[blocks/0]", f"hydra.run.dir={run_dir}"
    )
    before = read_arrays(checkpoint_state_dir(cnn_run))
    after = read_arrays(run_dir / "checkpoints" / str(latest_checkpoint(run_dir)) / "state")
    frozen = [k for k in before if "/blocks/0/" in k and k.startswith(("params/", "model_state/"))]
    assert {
        "params/blocks/0/conv/kernel",
        "model_state/blocks/0/norm/mean",
        "model_state/blocks/0/norm/var",
    } <= set(frozen)
    for key in frozen:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert not np.array_equal(after["params/blocks/1/conv/kernel"], before["params/blocks/1/conv/kernel"])
    assert not np.array_equal(
        after["model_state/blocks/1/norm/mean"], before["model_state/blocks/1/norm/mean"]
    )


def test_init_from_onto_other_classes_of_as_many_is_one_line_unless_the_head_starts_fresh(
    tmp_path: Path,
) -> None:
    """A head trained on digits 0-4 fits a run of 5-9 by shape: loaded, it would score the old
    classes under the new names, and nothing said so."""
    fast = ("+experiment=digits_mlp", "+debug=fast", *TINY)
    source = tmp_path / "zero_to_four"
    run_train(*fast, "data.classes=[0,1,2,3,4]", f"hydra.run.dir={source}")
    other = (*fast, "data.classes=[5,6,7,8,9]", f"trainer.init_from.path={source}")
    refused_dir = tmp_path / "refused"
    refused = run_train(*other, f"hydra.run.dir={refused_dir}", check=False)
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert "the classes 0, 1, 2, 3, 4; this run's are 5, 6, 7, 8, 9" in line
    assert line.endswith("trainer.init_from.exclude=[head]")
    assert "Traceback" not in refused.stderr and not refused_dir.exists()
    fresh = run_train(*other, "trainer.init_from.exclude=[head]", f"hydra.run.dir={tmp_path / 'fresh'}")
    assert "excluded (re-initialised) 2: params/head/bias, params/head/kernel" in fresh.stdout
    loaded = next(line for line in fresh.stdout.splitlines() if line.strip().startswith("loaded"))
    assert "params/hidden/0/kernel" in loaded and "head" not in loaded
    assert json.loads((tmp_path / "fresh" / "summary.json").read_text())["steps"] == 8
