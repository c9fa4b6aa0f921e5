"""Checkpoint faults end in the uninterrupted run's result or in one line, never in a traceback.

A damaged checkpoint (truncated arrays, a truncated OCDBT manifest) is moved aside and the run
resumes from the one before; where none can be read, the rerun and ``research.evaluate`` say so
in one line. A kill at any moment around the final save, a kill after a time-based save and a
full disk that is freed again all end, after a rerun, with the test metrics of a run that was
never interrupted and every step once in metrics.jsonl.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.checkpoints import latest_checkpoint, logged_steps, signal_run, snapshot
from tests.conftest import ROOT, TINY, run_train
from tests.test_faults import needs_root

DIGITS = ("+experiment=digits_mlp", "optimizer/schedule=constant", "trainer.plots=false", *TINY)
SAVES = (*DIGITS, "trainer.eval_every=20", "trainer.checkpoint.every=20")  # checkpoints at 20, 40, ...
NOISE = ("Traceback", "Event loop is closed")


def results(run_dir: Path) -> dict:
    """The test metrics of a finished run's summary.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k.startswith("test/")}


def assert_quiet(stderr: str) -> None:
    """No traceback: neither a crash nor Orbax's reads calling back into a closed event loop."""
    for noise in NOISE:
        assert noise not in stderr, stderr[-3000:]


def corrupt(step_dir: Path, how: str) -> None:
    """Damage a saved state as a crash or a bad disk does: truncate its array data or its manifest."""
    state = step_dir / "state"
    if how == "arrays":  # the metadata still reads; restoring the arrays fails
        files = [f for f in state.rglob("*") if f.is_file() and f.stat().st_size > 100_000]
    else:  # nothing of the state reads, not even its metadata
        files = list(state.rglob("manifest.ocdbt"))
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:10])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 40-step run with checkpoints at steps 20 and 40."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    run_train(*SAVES, "trainer.max_steps=40", f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 60-step run that every interrupted one must end up as."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_train(*SAVES, "trainer.max_steps=60", f"hydra.run.dir={run_dir}")
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    """A test's own copy of a module's run, to damage."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


@pytest.mark.parametrize("how", ["arrays", "manifest"])
def test_an_unreadable_latest_checkpoint_is_moved_aside_quietly_and_the_run_ends_as_uninterrupted(
    saved: Path, uninterrupted: Path, tmp_path: Path, how: str
) -> None:
    run_dir = copy_of(saved, tmp_path)
    corrupt(run_dir / "checkpoints" / "40", how)
    proc = run_train(*SAVES, "trainer.max_steps=60", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_quiet(proc.stderr)
    assert f"warning: checkpoint at step 40 ({run_dir / 'checkpoints' / '40'}) cannot be read" in proc.stdout
    assert f"resuming from step 20 ({run_dir / 'checkpoints' / '20'})" in proc.stdout
    assert results(run_dir) == results(uninterrupted)


def test_a_finished_run_whose_only_checkpoint_is_unreadable_says_so_in_one_line(
    saved: Path, tmp_path: Path
) -> None:
    run_dir = copy_of(saved, tmp_path)
    shutil.rmtree(run_dir / "checkpoints" / "20")
    corrupt(run_dir / "checkpoints" / "40", "manifest")
    before = snapshot(run_dir)
    proc = run_train(*SAVES, "trainer.max_steps=40", f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"error: checkpoint at step 40 ({run_dir / 'checkpoints' / '40'}) cannot be read ("
    )
    assert "no other checkpoint that can be read: start over with trainer.resume=false" in line
    assert "does not fit" not in line
    assert snapshot(run_dir) == before  # a refusal in preflight touches nothing


@pytest.mark.parametrize("how", ["arrays", "manifest"])
def test_evaluating_an_unreadable_checkpoint_is_one_line(saved: Path, tmp_path: Path, how: str) -> None:
    run_dir = copy_of(saved, tmp_path)
    corrupt(run_dir / "checkpoints" / "40", how)
    proc = subprocess.run(
        [sys.executable, "-m", "research.evaluate", f"run={run_dir}", "checkpoint=latest"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_quiet(proc.stderr)
    (line,) = proc.stderr.strip().splitlines()
    assert "cannot be read" in line and str(run_dir / "checkpoints" / "40") in line


def save_started(run_dir: Path, step: int) -> bool:
    """Orbax is writing ``step``'s checkpoint: its temporary directory exists."""
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any(p.name.startswith(f"{step}.orbax-checkpoint-tmp") for p in ckpts.iterdir())


def later(ready: Callable[[], bool], delay_s: float) -> Callable[[], bool]:
    """``ready`` once it has held for ``delay_s``."""
    since: list[float] = []

    def held() -> bool:
        if not since and ready():
            since.append(time.monotonic())
        return bool(since) and time.monotonic() >= since[0] + delay_s

    return held


# When the run is killed, and the step its rerun resumes from (the final save is lost until committed).
MOMENTS: dict[str, tuple[Callable[[Path], Callable[[], bool]], int]] = {
    "as the final save starts": (lambda run: partial(save_started, run, 60), 40),
    "while it writes": (lambda run: later(partial(save_started, run, 60), 0.03), 40),  # it takes ~0.15 s
    "once it is committed": (lambda run: (run / "checkpoints" / "60").is_dir, 60),
}


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_kill_around_the_final_save_reruns_to_the_uninterrupted_result(
    uninterrupted: Path, tmp_path: Path, moment: str
) -> None:
    run_dir = tmp_path / "run"
    args = (*SAVES, "trainer.max_steps=60", f"hydra.run.dir={run_dir}")
    ready, resumed = MOMENTS[moment]
    stopped = signal_run(args, ready(run_dir), signal.SIGKILL)
    assert stopped.code == -signal.SIGKILL
    proc = run_train(*args)
    assert_quiet(proc.stderr)
    assert f"resuming from step {resumed} ({run_dir / 'checkpoints' / str(resumed)})" in proc.stdout
    assert results(run_dir) == results(uninterrupted)
    assert logged_steps(run_dir) == logged_steps(uninterrupted)  # each step once


def test_a_time_based_checkpoint_is_saved_between_step_triggers_and_resumed_after_a_kill(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    args = (
        *DIGITS,
        "trainer.checkpoint.every=null",
        "trainer.checkpoint.every_s=0.5",
        "trainer.max_steps=2000",
        f"hydra.run.dir={run_dir}",
    )
    stopped = signal_run(args, lambda: latest_checkpoint(run_dir) > 0, signal.SIGKILL)
    assert stopped.code == -signal.SIGKILL
    proc = run_train(*args)
    resumed = int(re.search(r"resuming from step (\d+) ", proc.stdout).group(1))
    assert 0 < resumed < 2000
    steps = logged_steps(run_dir)
    assert len(steps) == len(set(steps)) and steps[-1] == 2000


@needs_root
def test_a_full_disk_freed_again_reruns_to_the_uninterrupted_result(
    uninterrupted: Path, tmp_path: Path
) -> None:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        ballast = mount / "ballast"  # leaves room for the checkpoint of step 20, not for that of step 40
        ballast.write_bytes(bytes(shutil.disk_usage(mount).free - 4 * 2**20))
        run_dir = mount / "run"
        args = (*SAVES, "trainer.max_steps=60", f"hydra.run.dir={run_dir}")
        full = run_train(*args, check=False)
        assert full.returncode == 2 and "could not write the checkpoint of step 40" in full.stderr, (
            full.stderr
        )
        ballast.unlink()
        proc = run_train(*args)
        assert f"resuming from step 20 ({run_dir / 'checkpoints' / '20'})" in proc.stdout
        assert results(run_dir) == results(uninterrupted)
        assert logged_steps(run_dir) == logged_steps(uninterrupted)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
