"""Reading a run's checkpoints and records from tests, and signalling a run at a known point."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.conftest import ROOT, TERMINAL_TRAIN, train_cmd


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with the hash of its bytes."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# A run that only a signal ends: the step count a test's interrupted runs are given.
ENDLESS = "trainer.max_steps=1000000"


def checkpoint_steps(run_dir: Path) -> list[int]:
    ckpts = run_dir / "checkpoints"
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.exists() else []


def latest_checkpoint(run_dir: Path) -> int:
    """The newest checkpoint step in ``run_dir``, 0 when there is none."""
    return max(checkpoint_steps(run_dir), default=0)


def logged_steps(run_dir: Path) -> list[int]:
    """The step of each complete line of ``metrics.jsonl``, in file order."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []  # the last piece may be partial
    return [json.loads(line)["step"] for line in lines]


def final_state(run_dir: Path) -> dict[str, np.ndarray]:
    """The state of the newest checkpoint as {leaf path: array} (PRNG keys as their key data)."""
    import jax
    import orbax.checkpoint as ocp

    ckpts = (run_dir / "checkpoints").absolute()
    with ocp.CheckpointManager(ckpts, item_names=("state", "meta", "data")) as manager:
        restored = manager.restore(
            latest_checkpoint(run_dir), args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )

    def plain(v):
        is_key = jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(v) if is_key else v)

    leaves = jax.tree_util.tree_leaves_with_path(restored["state"])
    return {jax.tree_util.keystr(k): plain(v) for k, v in leaves}


def assert_same_final_state(a: Path, b: Path) -> None:
    """The newest checkpoints of runs ``a`` and ``b`` hold bit-identical states."""
    x, y = final_state(a), final_state(b)
    assert x.keys() == y.keys()
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@dataclasses.dataclass
class Stopped:
    code: int
    stderr: str
    exit_s: float  # from the last signal to the exit

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def signal_run(
    overrides: tuple,
    ready: Callable[[], bool],
    *signals: int,
    gap_s: float = 0.3,
    timeout: float = 120,
    cwd: Path = ROOT,
) -> Stopped:
    """Run ``research.train`` with ``overrides``, send ``signals`` (``gap_s`` apart) once ``ready()``.

    Training starts through tests/terminal_train.py, so Ctrl-C (SIGINT) acts as at a terminal,
    and without Slurm's variables, so a preempted run never asks to requeue a job that runs
    the tests. A run that ends before ``ready()`` fails the test: a signal sent after the
    end proves nothing.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            train_cmd(*overrides, script=TERMINAL_TRAIN),
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        try:
            deadline = time.time() + timeout
            while not ready():
                if proc.poll() is not None or time.time() > deadline:
                    err.seek(0)
                    raise AssertionError(
                        f"the run ended (exit {proc.returncode}) or timed out before the point to "
                        f"signal it:\n{err.read()[-3000:]}"
                    )
                time.sleep(0.02)
            for i, sig in enumerate(signals):
                if i:
                    time.sleep(gap_s)
                proc.send_signal(sig)
            sent = time.time()
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running {timeout} s after the signal") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        return Stopped(code, err.read(), time.time() - sent)
