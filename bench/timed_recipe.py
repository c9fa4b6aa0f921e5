"""A recipe trained through the CLI in a child process, timed in wall and CPU seconds.

CPU seconds (the children's user + system time) are the figure that holds on a shared machine,
where wall time depends on what else runs (bench/speech_ctc.py, bench/translation.py).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def children_cpu_s() -> float:
    """User + system seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(recipe: str, run_dir: Path, data_dir: str, overrides: list[str]) -> dict:
    """``research.train +experiment=<recipe>`` into ``run_dir``; its wall and CPU seconds."""
    start, cpu = time.perf_counter(), children_cpu_s()
    cmd = [sys.executable, "-m", "research.train", f"+experiment={recipe}", "logger=none",
           "trainer.progress=false", f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "TFDS_DATA_DIR": data_dir}, cwd=ROOT)
    return {"process_wall_s": time.perf_counter() - start, "process_cpu_s": children_cpu_s() - cpu}
