"""K seeds as one vmapped program against K sequential runs, on the same machine, in one process.

Both sides are whole runs through ``research.experiment.run`` (build, compile, train,
validation, test, summary), the way a user runs them: ``trainer.num_seeds=K`` once,
against ``seed=0..K-1`` one after another. The persistent compilation cache is off
so that every sequential run compiles, as separate runs on a fresh machine would.
Prints a markdown table row per model, plus the per-seed test accuracies of both
sides (they differ: seed s of the vmapped run is not the run with seed=s).

    python bench/seeds_vs_sequential.py                     # digits MLP and CNN, 8 seeds
    python bench/seeds_vs_sequential.py --seeds 8 --steps 400 --experiments digits_mlp
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


def whole_run(experiment: str, overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    """Wall seconds of one run and its summary."""
    cfg = compose_train([f"+experiment={experiment}", *overrides])
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    summary = run(cfg, run_dir)
    return time.perf_counter() - start, summary


def compare(experiment: str, seeds: int, steps: int, tmp: Path) -> dict:
    common = [
        "logger=none",
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={steps}",
        "trainer.progress=false",
        "trainer.plots=false",
        "trainer.checkpoint.enabled=false",
        "trainer.compile_cache=null",
        "optimizer/schedule=constant",
    ]
    vmapped_s, vmapped = whole_run(experiment, [*common, f"trainer.num_seeds={seeds}"], tmp / "vmapped")
    sequential_s, sequential = 0.0, []
    for seed in range(seeds):
        wall, summary = whole_run(experiment, [*common, f"seed={seed}"], tmp / f"seed{seed}")
        sequential_s += wall
        sequential.append(summary)
    train_seq = sum(steps / s["train/steps_per_s"] for s in sequential)
    train_vmapped = steps / vmapped["train/steps_per_s"]
    return {
        "experiment": experiment,
        "seeds": seeds,
        "steps": steps,
        "vmapped_wall_s": vmapped_s,
        "sequential_wall_s": sequential_s,
        "speedup_wall": sequential_s / vmapped_s,
        "vmapped_train_s": train_vmapped,
        "sequential_train_s": train_seq,
        "speedup_train": train_seq / train_vmapped,
        "vmapped_test_accuracy": vmapped["test/accuracy_per_seed"],
        "sequential_test_accuracy": [s["test/accuracy"] for s in sequential],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=["digits_mlp", "digits_cnn"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} x{jax.device_count()} ({device.platform}), jax {jax.__version__}\n")
    print(
        "| experiment | seeds x steps | one program: wall (train) | sequential: wall (train) "
        "| speed-up: wall (train) "
        "| test accuracy, mean +- std: one program / sequential |"
    )
    print("|---|---|---|---|---|---|")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in args.experiments:
            r = compare(experiment, args.seeds, args.steps, Path(tmp) / experiment)
            results.append(r)
            acc_v, acc_s = np.asarray(r["vmapped_test_accuracy"]), np.asarray(r["sequential_test_accuracy"])
            print(
                f"| {experiment} | {args.seeds} x {args.steps} | {r['vmapped_wall_s']:.1f} s "
                f"({r['vmapped_train_s']:.1f} s) | {r['sequential_wall_s']:.1f} s "
                f"({r['sequential_train_s']:.1f} s) "
                f"| **{r['speedup_wall']:.1f}x** ({r['speedup_train']:.1f}x) "
                f"| {acc_v.mean():.3f} +- {acc_v.std():.3f} / {acc_s.mean():.3f} +- {acc_s.std():.3f} |",
                flush=True,
            )
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
