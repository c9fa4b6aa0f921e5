"""Bad input: one line on stderr, exit code 2, no traceback, nothing created or overwritten."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_train

BAD = {
    "unknown experiment": (
        ["+experiment=does_not_exist"],
        "unknown experiment 'does_not_exist': choose one of",
    ),
    "unknown key": (["trainer.epoch=3"], "unknown config key 'trainer.epoch'"),
    "unknown group option": (["model=transformerz"], "no config 'transformerz' in group 'model'"),
    "wrong type": (["data.batch_size=abc"], "data.batch_size must be a positive integer, got 'abc'"),
    "negative learning rate": (
        ["optimizer.learning_rate=-0.1"],
        "optimizer.learning_rate must be a positive number",
    ),
    "zero batch size": (["data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
    "unknown program": (
        ["trainer.unoptimized=[init,evaluate]"],
        "trainer.unoptimized must be a list of programs among init, train, eval",
    ),
    # The trainer's schema (research/engine/settings.py): nested groups are typed too.
    "a path for a group": (["trainer.init_from=/a/path"], "set trainer.init_from.path="),
    "a number for a group": (["trainer.checkpoint=3"], "trainer.checkpoint must be a group of settings"),
    "text for a nested integer": (
        ["trainer.early_stopping.patience=abc"],
        "trainer.early_stopping.patience must be a positive integer or null, got 'abc'",
    ),
    "misspelt nested key": (["trainer.checkpoint.evry=5"], "unknown config key 'trainer.checkpoint.evry'"),
    "missing config dir": (
        ["--config-dir", "/nonexistent/configs"],
        "--config-dir /nonexistent/configs: no such directory",
    ),
    "mesh larger than the devices": (["mesh=data_parallel", "mesh.data=4"], "does not fit 1 devices"),
    "init_from a missing path": (
        ["trainer.init_from.path=/nonexistent/run"],
        "/nonexistent/run' does not exist",
    ),
    "misspelt nested key added": (
        ["+trainer.checkpoint.evry=5"],
        "trainer.checkpoint.evry is not a setting: choose among enabled, every",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_override_is_one_line(case: str, run_dir: Path) -> None:
    overrides, expected = BAD[case]
    proc = run_train(*overrides, *TINY, f"hydra.run.dir={run_dir}", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run_dir.exists()


def test_a_recipes_model_keys_left_over_after_switching_model_are_one_line(run_dir: Path) -> None:
    """digits_cnn sets model.channels; with model=resnet that key has no parameter to go to."""
    proc = run_train("+experiment=digits_cnn", "model=resnet", *TINY, f"hydra.run.dir={run_dir}", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    left_over = "model.channels, model.dense_sizes, model.batch_norm"  # every key left over, at once
    assert lines[0].startswith(f"error: {left_over} are not parameters of research.models.resnet.ResNet")
    assert "~model.channels ~model.dense_sizes ~model.batch_norm" in lines[0]
    assert not run_dir.exists(), "refused before Hydra creates the run directory"


def test_bad_input_leaves_a_saved_run_untouched(run_dir: Path) -> None:
    """Rerunning a finished run's directory with bad input changes none of its files."""
    run_train(*TINY, "+debug=fast", f"hydra.run.dir={run_dir}")

    def snapshot() -> dict:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}

    before = snapshot()
    assert any("checkpoints" in p for p in before) and any(p.endswith("summary.json") for p in before)
    for bad in (["optimizer.learning_rate=-1"], ["+experiment=digits_cnn", "model=resnet"]):
        proc = run_train(*bad, *TINY, f"hydra.run.dir={run_dir}", check=False, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert snapshot() == before, bad


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A directory this user cannot write to. Root ignores permission bits, so for root (as in CI)
    it is a read-only tmpfs mounted there."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)
        yield locked
        locked.chmod(0o700)
        return
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.skip(f"root cannot mount a read-only tmpfs here: {mount.stderr.strip()}")
    try:
        yield locked
    finally:
        subprocess.run(["umount", str(locked)], check=True)


def test_unwritable_run_dir(read_only_dir: Path) -> None:
    proc = run_train(*TINY, f"hydra.run.dir={read_only_dir / 'run'}", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
    assert "not writable" in proc.stderr and "Traceback" not in proc.stderr


def test_unwritable_run_dir_as_file(tmp_path: Path) -> None:
    """A path under a regular file can never be created, even by root."""
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    proc = run_train(*TINY, f"hydra.run.dir={blocker / 'run'}", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
    assert "not writable" in proc.stderr and "Traceback" not in proc.stderr
    assert blocker.read_text() == "keep me"


def test_sweep_value_checked_before_any_job(tmp_path: Path) -> None:
    proc = run_train(
        "-m",
        *TINY,
        "optimizer.learning_rate=1e-3,-1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "optimizer.learning_rate must be a positive number, got -1" in proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_help_and_cfg_job_answer_without_jax() -> None:
    code = (
        "import sys, runpy; sys.argv=['research.train','--cfg','job'];\n"
        "try:\n runpy.run_module('research.train', run_name='__main__')\nexcept SystemExit: pass\n"
        "assert 'jax' not in sys.modules, 'jax imported by --cfg job'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "optimizer:" in proc.stdout and "learning_rate" in proc.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "research.train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert helped.returncode == 0 and "experiment" in helped.stdout


def test_dataset_not_prepared_says_how_to_prepare_it(run_dir: Path, tmp_path: Path) -> None:
    proc = run_train(
        "+experiment=mnist_mlp",
        *TINY,
        f"hydra.run.dir={run_dir}",
        check=False,
        timeout=120,
        env={"TFDS_DATA_DIR": str(tmp_path / "empty")},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "python -m research.data.prepare mnist" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_damaged_yaml_in_a_config_dir_is_one_line_naming_the_file(tmp_path: Path, run_dir: Path) -> None:
    (tmp_path / "configs" / "model").mkdir(parents=True)
    (tmp_path / "configs" / "model" / "broken.yaml").write_text("_target_: [oops\n")
    proc = run_train("--config-dir", str(tmp_path / "configs"), "model=broken", *TINY,
                     f"hydra.run.dir={run_dir}", check=False, timeout=60)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{tmp_path / 'configs' / 'model' / 'broken.yaml'}, line 2 is not valid YAML" in lines[0]
    assert not run_dir.exists()
