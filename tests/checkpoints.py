"""Reading a run's checkpoints from tests, and killing a run once it has written one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from tests.conftest import ROOT, TERMINAL_TRAIN, train_cmd


def latest_checkpoint(run_dir: Path) -> int:
    """The newest checkpoint step in ``run_dir``, 0 when there is none."""
    ckpts = run_dir / "checkpoints"
    steps = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.exists() else []
    return max(steps, default=0)


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


def kill_after_checkpoint(
    overrides: tuple, run_dir: Path, step: int, sig: int = signal.SIGKILL, timeout: float = 120
) -> tuple[int, str]:
    """Start ``python -m research.train``, send ``sig`` once a checkpoint at ``step`` or later
    exists, and return its exit code and stderr (keep its progress bar off: stderr is a pipe).
    """
    proc = subprocess.Popen(
        train_cmd(*overrides, f"hydra.run.dir={run_dir}", script=TERMINAL_TRAIN),
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + timeout
    while latest_checkpoint(run_dir) < step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err
