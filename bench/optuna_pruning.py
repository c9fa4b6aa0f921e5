"""The same Optuna search on digits with and without a pruner: wall time, best value, steps trained.

Each search is the command a user runs, in a fresh folder (its own study and compilation
cache), one after the other:

    python -m research.train -m +experiment=digits_mlp hparams_search=digits_optuna \\
        hydra.sweeper.n_trials=16 hydra/sweeper/pruner=<pruner> logger=none trainer.progress=false

Prints a markdown table row per pruner (figures for docs/benchmarks.md).

    python bench/optuna_pruning.py                              # 16 trials, none vs median
    python bench/optuna_pruning.py --trials 16 --pruners none,median,hyperband
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def search(pruner: str, trials: int, folder: Path) -> float:
    """Wall seconds of one whole search (every trial: start-up, compile, train, test)."""
    command = [
        sys.executable,
        "-m",
        "research.train",
        "-m",
        "+experiment=digits_mlp",
        "hparams_search=digits_optuna",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra/sweeper/pruner={pruner}",
        "hydra.sweeper.study_name=bench",
        "logger=none",
        "trainer.progress=false",
    ]
    env = {**os.environ, "XDG_CACHE_HOME": str(folder / "cache"), "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def describe(folder: Path) -> dict:
    """Best value, trials by state and training steps run, from the study's storage."""
    import optuna

    from research.sweep.storage import sqlite_storage

    study = optuna.load_study(
        study_name="bench", storage=sqlite_storage(folder / "runs/optuna/bench/study.db")
    )
    states = Counter(t.state.name.lower() for t in study.trials)
    steps = sum(max(t.intermediate_values, default=0) for t in study.trials)
    return {"best": study.best_value, "states": dict(states), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument(
        "--pruners", default="none,median", help="comma-separated conf/hydra/sweeper/pruner names"
    )
    args = parser.parse_args()
    print("| pruner | trials | complete / pruned / failed | steps trained | wall | best val/accuracy |")
    print("|---|---|---|---|---|---|")
    for pruner in args.pruners.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            wall = search(pruner, args.trials, Path(tmp))
            info = describe(Path(tmp))
        s = info["states"]
        counts = f"{s.get('complete', 0)} / {s.get('pruned', 0)} / {s.get('fail', 0)}"
        row = [pruner, str(args.trials), counts, f"{info['steps']:,}", f"{wall:.0f} s", f"{info['best']:.4f}"]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
