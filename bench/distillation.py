"""Knowledge distillation against the same student from scratch, same budget, seeds in one program.

The student is ``fashion_mnist_cnn_distill``'s quarter-width CNN. Both sides are whole runs through
``research.experiment.run`` with ``trainer.num_seeds=K`` (K replicas vmapped in one program): once
with ``task=distillation`` reading the teacher run, once with ``task=classification``. Same data
order per seed, same schedule and number of updates; only the loss differs. Prints a markdown row
per side (test accuracy mean +- sample std over the seeds, each seed's, wall time), then JSON.

    python -m research.train +experiment=fashion_mnist_cnn hydra.run.dir=runs/fashion_mnist_cnn_teacher
    python bench/distillation.py --teacher runs/fashion_mnist_cnn_teacher                # 5 epochs, seeds 0-2
    python bench/distillation.py --teacher runs/fashion_mnist_cnn_teacher --first-seed 3 # seeds 3-5
    python bench/distillation.py --teacher runs/fashion_mnist_cnn_teacher --only distilled --alpha 0.9 \
        --temperature 4                                                                  # Hinton's setting
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from research.config import compose_train
from research.experiment import run
from research.statistics import std

RECIPE = "fashion_mnist_cnn_distill"
SCRATCH = ["task=classification", "~task.alpha", "~task.temperature"]  # the recipe's loss settings dropped


def whole_run(overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    """Wall seconds of one run and its summary."""
    cfg = compose_train([f"+experiment={RECIPE}", *overrides])
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    summary = run(cfg, run_dir)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a finished fashion_mnist_cnn run directory")
    parser.add_argument("--epochs", type=int, default=None, help="the students' budget (the recipe's)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="the first of the seeds")
    parser.add_argument("--alpha", type=float, default=None, help="task.alpha (default: the recipe's)")
    parser.add_argument("--temperature", type=float, default=None, help="task.temperature (the recipe's)")
    parser.add_argument("--only", choices=("scratch", "distilled"), default=None, help="run one side")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} x{jax.device_count()} ({device.platform}), jax {jax.__version__}")
    teacher = json.loads((Path(args.teacher) / "summary.json").read_text())
    print(f"teacher {args.teacher}: test accuracy {teacher['test/accuracy']:.4f}, {teacher['steps']} steps\n")
    common = [
        "logger=none",
        *([f"trainer.epochs={args.epochs}"] if args.epochs is not None else []),
        f"trainer.num_seeds={args.seeds}",
        f"seed={args.first_seed}",
        "trainer.progress=false",
        "trainer.plots=false",
        "trainer.checkpoint.enabled=false",
    ]
    loss = [
        f"task.{k}={v}"
        for k, v in (("alpha", args.alpha), ("temperature", args.temperature))
        if v is not None
    ]
    sides = {
        "from scratch (task=classification)": SCRATCH,
        f"distilled ({' '.join(loss) or 'task=distillation'})": [
            f"task.teacher.run={Path(args.teacher).resolve()}",
            *loss,
        ],
    }
    if args.only:
        sides = dict([list(sides.items())[args.only == "distilled"]])
    epochs = args.epochs or compose_train([f"+experiment={RECIPE}"]).trainer.epochs
    budget = f"{epochs} epochs x {args.seeds} seeds"
    print(f"| student, {budget} | test accuracy, mean +- std | per seed | wall |")
    print("|---|---|---|---|")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, overrides) in enumerate(sides.items()):
            wall, summary = whole_run([*common, *overrides], Path(tmp) / str(i))
            accuracy = np.asarray(summary["test/accuracy_per_seed"], np.float64)
            results[label] = {"test_accuracy": accuracy.tolist(), "wall_s": wall, "steps": summary["steps"]}
            seeds = ", ".join(f"{a:.4f}" for a in accuracy)
            mean = f"{accuracy.mean():.4f} +- {std(accuracy):.4f}"
            print(f"| {label} | {mean} | {seeds} | {wall:.0f} s |", flush=True)
    print("\n" + json.dumps({"teacher_test_accuracy": teacher["test/accuracy"], **results}))


if __name__ == "__main__":
    main()
