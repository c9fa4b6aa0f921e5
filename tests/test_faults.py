"""Faults and reruns end in one line and lose nothing that was saved.

Each test compares the run directory's files byte for byte before and after, or checks
that the checkpoint left behind still restores.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from research.engine.init_from import read_arrays
from tests.checkpoints import checkpoint_steps, snapshot
from tests.conftest import TINY, run_train

FAST = ("+experiment=digits_mlp", "optimizer/schedule=constant", "trainer.eval_every=20", *TINY)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_train(*FAST, "trainer.max_steps=40", f"hydra.run.dir={run_dir}")
    return run_dir


def test_rerunning_a_finished_run_says_so_and_changes_nothing(finished: Path) -> None:
    before = snapshot(finished)
    proc = run_train(*FAST, "trainer.max_steps=40", f"hydra.run.dir={finished}")
    assert proc.stdout.startswith(f"{finished} is finished (step 40); nothing to do")
    assert '"test/accuracy"' in proc.stdout and proc.stderr == ""
    assert snapshot(finished) == before


def test_a_changed_model_into_a_finished_run_is_one_line_and_changes_nothing(finished: Path) -> None:
    before = snapshot(finished)
    proc = run_train(
        *FAST, "trainer.max_steps=40", "model.hidden_sizes=[7]", f"hydra.run.dir={finished}", check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {finished} holds a run whose checkpoint does not fit this config "
        "(model.hidden_sizes: [512, 256] -> [7]): start a new run with trainer.resume=false "
        "hydra.run.dir=<new dir>, or rerun with the original values"
    ]
    assert snapshot(finished) == before


def test_an_error_found_while_building_leaves_no_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_train(
        "+experiment=digits_mlp",
        *TINY,
        "optimizer.schedule.warmup_steps=100",
        "trainer.max_steps=40",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: optimizer.schedule.warmup_steps=100 must be below decay_steps=40 (this run makes 40 "
        "optimizer updates): lower it or use optimizer/schedule=constant"
    ]
    assert not run_dir.exists()


def test_every_shipped_warmup_fits_a_one_epoch_run(tmp_path: Path) -> None:
    proc = run_train("+experiment=digits_mlp", *TINY, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert '"steps": 40' in proc.stdout


def test_a_corrupt_latest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    args = (*FAST, "trainer.checkpoint.every=20", f"hydra.run.dir={run_dir}")
    run_train(*args, "trainer.max_steps=40")
    assert 40 in checkpoint_steps(run_dir) and 20 in checkpoint_steps(run_dir)
    for f in (run_dir / "checkpoints" / "40" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 1000:  # the array data, not the metadata
            f.write_bytes(f.read_bytes()[:100])
    proc = run_train(*args, "trainer.max_steps=60")
    assert f"warning: checkpoint at step 40 ({run_dir / 'checkpoints' / '40'}) cannot be read" in proc.stdout
    assert f"resuming from step 20 ({run_dir / 'checkpoints' / '20'})" in proc.stdout
    assert (run_dir / "checkpoints_unreadable" / "40" / "state").is_dir()
    assert max(checkpoint_steps(run_dir)) == 60


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_a_disk_that_fills_during_a_save_is_one_line_and_the_previous_checkpoint_restores(
    tmp_path: Path,
) -> None:
    mount = tmp_path / "small"
    _mount_tmpfs(mount, "size=6m")
    try:
        run_dir = mount / "run"
        proc = run_train(
            *FAST,
            "trainer.max_steps=200",
            "trainer.checkpoint.every=20",
            "trainer.plots=false",
            f"hydra.run.dir={run_dir}",
            check=False,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        failed, good = re.match(
            r"error: could not write the checkpoint of step (\d+) .* "
            r"the last good checkpoint is step (\d+) in ",
            line,
        ).groups()
        assert int(good) < int(failed) and f"in {run_dir / 'checkpoints'}:" in line
        assert read_arrays(run_dir / "checkpoints" / good / "state")["params/head/kernel"].shape == (256, 10)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@needs_root
def test_a_read_only_run_directory_is_one_line(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "ro,size=1m")
    try:
        proc = run_train(*FAST, "trainer.max_steps=4", f"hydra.run.dir={mount / 'run'}", check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"error: run directory {mount / 'run'} is not writable: choose another with hydra.run.dir=..."
        ]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@needs_root
def test_a_disk_already_full_at_the_start_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "full"
    _mount_tmpfs(mount, "size=1m")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'ballast'}", "bs=1k", "count=4096"],
                       capture_output=True, check=False)  # fmt: skip
        proc = run_train(*FAST, "trainer.max_steps=4", f"hydra.run.dir={mount / 'run'}", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: run directory {mount / 'run'} cannot be written (No space left on device): free disk "
            "space or choose another with hydra.run.dir=..."
        ]
        assert sorted(p.name for p in mount.iterdir()) == ["ballast"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)
