"""Ctrl-C as at a terminal: a second press stops at once; in a grid sweep no further job starts.

The first Ctrl-C of a run is tested with the other signals in test_resume.py.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from research.engine.preemption import STOPPED_AT_ONCE
from tests.checkpoints import ENDLESS, checkpoint_steps, logged_steps, signal_run
from tests.conftest import TINY

BASE = ("+experiment=digits_mlp", "optimizer/schedule=constant", ENDLESS, *TINY)
CALL = 5000  # steps per call in the first test: seconds of work that a first Ctrl-C waits for
INTERRUPTED = re.compile(
    r"error: interrupted at step (\d+); checkpoint saved; rerun the same command to resume"
)


def test_a_second_ctrl_c_stops_at_once_without_saving(run_dir: Path) -> None:
    """Pressed while the second call runs: the first press alone would save at its end, step
    2 * CALL; the second exits with code 130 and its one line, and no checkpoint is begun."""
    every_call = (
        f"trainer.{key}={CALL}" for key in ("steps_per_call", "log_every", "eval_every", "checkpoint.every")
    )
    stop = signal_run(
        (*BASE, *every_call, f"hydra.run.dir={run_dir}"),
        lambda: checkpoint_steps(run_dir) == [CALL],  # the first call is over, saved and recorded
        signal.SIGINT,
        signal.SIGINT,
        gap_s=0.3,
    )
    assert stop.code == 130 and stop.lines == [STOPPED_AT_ONCE.strip()], stop.stderr
    # Not a step directory, nor Orbax's temporary one of a save begun: only the first call's.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [str(CALL)]
    assert checkpoint_steps(run_dir) == [CALL] and logged_steps(run_dir) == [CALL]
    assert not (run_dir / "summary.json").exists()


def test_ctrl_c_in_a_grid_sweep_saves_the_job_and_starts_no_further_one(tmp_path: Path) -> None:
    """Ctrl-C in the first job of a multirun: that job saves and says so, the sweep exits 130."""
    sweep = tmp_path / "sweep"
    stop = signal_run(
        (
            "-m",
            *BASE,
            "trainer.steps_per_call=1",
            "trainer.log_every=1",
            "trainer.eval_every=1000",
            "trainer.checkpoint.every=1000",
            "seed=0,1,2",
            f"hydra.sweep.dir={sweep}",
        ),
        lambda: max(logged_steps(sweep / "0"), default=0) >= 5,
        signal.SIGINT,
        cwd=tmp_path,
    )
    assert stop.code == 130 and "Traceback" not in stop.stderr, stop.stderr
    match = INTERRUPTED.fullmatch(stop.lines[-1])
    assert match, stop.stderr
    assert checkpoint_steps(sweep / "0") == [int(match.group(1))]
    assert not (sweep / "1").exists() and not (sweep / "2").exists()
