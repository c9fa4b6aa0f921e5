"""Shared test set-up: CPU JAX, W&B off, a TFDS data dir of the test session's own."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TFDS_DATA_DIR", str(Path(tempfile.gettempdir()) / "research-tests-tfds"))
os.environ.setdefault("HYDRA_FULL_ERROR", "0")
# The persistent compilation cache (trainer.compile_cache) of the test session, not the user's.
os.environ.setdefault("XDG_CACHE_HOME", str(Path(tempfile.gettempdir()) / "research-tests-cache"))


def train_cmd(*overrides: str, script: Path | None = None) -> list[str]:
    entry = [str(script)] if script else ["-m", "research.train"]
    return [sys.executable, *entry, *overrides]


# ``python tests/terminal_train.py <overrides>``: research.train taking Ctrl-C as at a terminal.
TERMINAL_TRAIN = ROOT / "tests" / "terminal_train.py"


def run_train(
    *overrides: str,
    timeout: float = 300,
    check: bool = True,
    env: dict | None = None,
    cwd: Path | None = None,
    script: Path | None = None,
) -> subprocess.CompletedProcess:
    """``python -m research.train`` in a subprocess, as a user runs it.

    ``script``: a wrapper such as mock_train; ``env`` values of None remove the variable.
    """
    merged = {**os.environ, **(env or {})}
    proc = subprocess.run(
        train_cmd(*overrides, script=script),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env={k: v for k, v in merged.items() if v is not None},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


# Small, fast settings for end-to-end runs through the CLI.
TINY = ("logger=none", "trainer.progress=false")
# The default experiment in a few steps: for sweeps, where each job's result matters less than the jobs.
DIGITS_FAST = ("+experiment=digits_mlp", "optimizer/schedule=constant", "+debug=fast", *TINY)


def parse_table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows as {column: cell}) of the markdown table in ``text`` (research.compare's output)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return header, [dict(zip(header, row, strict=True)) for row in cells]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
