"""The run directory as the trainer finds it: an earlier run's files set aside on request."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

PREVIOUS = ("checkpoints", "metrics.jsonl", "summary.json", "plots", "eval.json")


def set_aside_previous(run_dir: Path) -> Path | None:
    """With ``trainer.resume=false`` in a used run directory: move the earlier run's files into
    ``replaced/<time>/`` (nothing saved is lost) so the new run starts from nothing.
    """
    present = [name for name in PREVIOUS if (run_dir / name).exists()]
    if not present:
        return None
    aside = run_dir / "replaced" / time.strftime("%Y-%m-%d_%H-%M-%S")
    aside.mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.move(str(run_dir / name), str(aside / name))
    print(f"trainer.resume=false: the earlier run's files are moved to {aside}", flush=True)
    return aside
