"""K-fold cross-validation as one vmapped program against its K folds run one after another.

Both sides are whole runs through ``research.experiment.run`` (build, compile, train,
fold validation, summary), in one process: ``trainer.cv_folds=K`` once, against
``trainer.cv_fold=0..K-1`` one after another (what a multirun over ``trainer.cv_fold``
runs as K jobs). Fold i alone trains on the same examples in the same order from the
same init as replica i, so the two sides' fold scores agree up to float rounding.
As in ``seeds_vs_sequential.py`` the persistent compilation cache is off (every
sequential run compiles, as separate jobs on a fresh machine would), and so are
checkpoints and plots; an untimed 8-step run first takes the process's one-time costs.
Prints a markdown row per setting, the fold scores of both sides, and the load
average of the machine (other processes slow both sides).

``--cli`` measures what a user runs instead: one ``python -m research.train
+experiment=E trainer.cv_folds=K`` against K commands with ``trainer.cv_fold=i``, each
a fresh process with the default settings (checkpoints, plots, the persistent
compilation cache in a fresh folder that the K commands share, as they would on one
machine). Process start and imports count on both sides.

    python bench/cv_folds.py               # digits_mlp, 5 folds: the recipe's 30 epochs, and 400 steps
    python bench/cv_folds.py --folds 5 --steps recipe
    python bench/cv_folds.py --cli --steps recipe
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from research.config import compose_train
from research.experiment import run

RECIPE = "recipe"  # --steps value: the experiment's own epochs
ROOT = Path(__file__).resolve().parent.parent


def whole_run(experiment: str, overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    """Wall seconds of one run and its summary."""
    cfg = compose_train([f"+experiment={experiment}", *overrides])
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    summary = run(cfg, run_dir)
    return time.perf_counter() - start, summary


def cli_run(experiment: str, overrides: list[str], run_dir: Path, cache: Path) -> tuple[float, dict]:
    """Wall seconds of one ``python -m research.train`` process and its summary."""
    cmd = [sys.executable, "-m", "research.train", f"+experiment={experiment}", *overrides,
           "logger=none", "trainer.progress=false", f"trainer.compile_cache={cache}",
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, json.loads((run_dir / "summary.json").read_text())


def cli_compare(experiment: str, folds: int, steps: str, metric: str, tmp: Path) -> dict:
    """One CV command against ``folds`` single-fold commands, each a fresh process, default settings."""
    common = [f"trainer.cv_folds={folds}", *([] if steps == RECIPE else [f"trainer.max_steps={steps}"])]
    load_before = os.getloadavg()[0]
    vmapped_s, vmapped = cli_run(experiment, common, tmp / "vmapped", tmp / "cache-vmapped")
    sequential_s, sequential = 0.0, []
    for fold in range(folds):
        overrides = [*common, f"trainer.cv_fold={fold}"]
        wall, summary = cli_run(experiment, overrides, tmp / f"fold{fold}", tmp / "cache-sequential")
        sequential_s += wall
        sequential.append(summary)
    return _result(experiment, folds, metric, load_before, vmapped_s, vmapped, sequential_s, sequential)


def compare(experiment: str, folds: int, steps: str, metric: str, tmp: Path) -> dict:
    common = [
        "logger=none",
        "trainer.progress=false",
        "trainer.plots=false",
        "trainer.checkpoint.enabled=false",
        "trainer.compile_cache=null",
        f"trainer.cv_folds={folds}",
        *([] if steps == RECIPE else [f"trainer.max_steps={steps}"]),
    ]
    # Untimed: what the process pays once (imports, first traces) is charged to neither side.
    whole_run(experiment, [*common, "trainer.cv_fold=0", "trainer.max_steps=8"], tmp / "warmup")
    load_before = os.getloadavg()[0]
    vmapped_s, vmapped = whole_run(experiment, common, tmp / "vmapped")
    sequential_s, sequential = 0.0, []
    for fold in range(folds):
        wall, summary = whole_run(experiment, [*common, f"trainer.cv_fold={fold}"], tmp / f"fold{fold}")
        sequential_s += wall
        sequential.append(summary)
    return _result(experiment, folds, metric, load_before, vmapped_s, vmapped, sequential_s, sequential)


def _result(
    experiment: str, folds: int, metric: str, load_before: float,
    vmapped_s: float, vmapped: dict, sequential_s: float, sequential: list[dict],
) -> dict:  # fmt: skip
    """The two sides' wall and train seconds, speed-ups and fold scores."""
    train_steps = vmapped["steps"]
    train_seq = sum(train_steps / s["train/steps_per_s"] for s in sequential)
    train_vmapped = train_steps / vmapped["train/steps_per_s"]
    return {
        "experiment": experiment,
        "folds": folds,
        "steps": train_steps,
        "load": (load_before, os.getloadavg()[0]),
        "vmapped_wall_s": vmapped_s,
        "sequential_wall_s": sequential_s,
        "speedup_wall": sequential_s / vmapped_s,
        "vmapped_train_s": train_vmapped,
        "sequential_train_s": train_seq,
        "speedup_train": train_seq / train_vmapped,
        "vmapped_scores": vmapped[f"{metric}_per_fold"],
        "sequential_scores": [s[metric] for s in sequential],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="digits_mlp")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", nargs="+", default=[RECIPE, "400"], help=f"'{RECIPE}' or a step count")
    parser.add_argument("--metric", default="cv/accuracy", help="the fold score shown")
    parser.add_argument("--cli", action="store_true", help="fresh processes with the default settings")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} x{jax.device_count()} ({device.platform}), jax {jax.__version__}\n")
    print(
        "| experiment | folds x steps | one program: wall (train) | sequential folds: wall (train) "
        f"| speed-up: wall (train) | {args.metric}, mean +- std: one program / sequential | load avg |"
    )
    print("|---|---|---|---|---|---|---|")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            side = cli_compare if args.cli else compare
            r = side(args.experiment, args.folds, steps, args.metric, Path(tmp) / steps)
            results.append(r)
            v, s = np.asarray(r["vmapped_scores"]), np.asarray(r["sequential_scores"])
            print(
                f"| {r['experiment']} | {r['folds']} x {r['steps']} | {r['vmapped_wall_s']:.1f} s "
                f"({r['vmapped_train_s']:.1f} s) | {r['sequential_wall_s']:.1f} s "
                f"({r['sequential_train_s']:.1f} s) "
                f"| **{r['speedup_wall']:.1f}x** ({r['speedup_train']:.1f}x) "
                f"| {v.mean():.3f} +- {v.std():.3f} / {s.mean():.3f} +- {s.std():.3f} "
                f"| {r['load'][0]:.1f} -> {r['load'][1]:.1f} |",
                flush=True,
            )
    for r in results:
        print(f"\nfold scores, {r['steps']} steps: one program {np.round(r['vmapped_scores'], 4).tolist()}")
        print(f"fold scores, {r['steps']} steps: sequential  {np.round(r['sequential_scores'], 4).tolist()}")
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
