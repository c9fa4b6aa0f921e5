"""The planted-matrix recipe against a hand-written ALS on the same generated ratings.

    JAX_PLATFORMS=cpu python bench/recommendation.py [--l2 0.01 0.05]

Trains ``+experiment=planted_ratings_mf`` through the CLI (one run per ``--l2``; its summary's
test/rmse, wall time and the oracle RMSE of the noise-free matrix), then fits the same rank by
alternating least squares in numpy (ridge ``lambda`` picked on val from a small grid) on the very
same train/val/test ratings, in this process. Data: GENERATED (conf/data/planted_ratings.yaml).
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

import numpy as np
from omegaconf import OmegaConf

from research.data.ratings import planted

ROOT = Path(__file__).resolve().parent.parent
ALS_LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0)  # ridge penalties tried; the best on val is reported
ALS_SWEEPS = 15  # alternations: the val RMSE stops moving well before this


def run_recipe(l2: float, folder: Path) -> dict:
    run_dir = folder / f"l2_{l2}"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "research.train", "+experiment=planted_ratings_mf", f"task.l2={l2}",
         "logger=none", "trainer.progress=false", f"hydra.run.dir={run_dir}"],
        check=True, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**summary, "process_s": time.perf_counter() - start}


def solve_side(fixed: np.ndarray, rows: np.ndarray, cols: np.ndarray, r: np.ndarray, n: int, lam: float):
    """Each row's ridge solution against the ``fixed`` factors of the columns it rated."""
    rank = fixed.shape[1]
    out = np.zeros((n, rank))
    order = np.argsort(rows, kind="stable")
    starts = np.searchsorted(rows[order], np.arange(n + 1))
    for i in range(n):
        idx = order[starts[i] : starts[i + 1]]
        q = fixed[cols[idx]]
        out[i] = np.linalg.solve(q.T @ q + lam * np.eye(rank), q.T @ r[idx])
    return out


def als(parts: dict, sizes: tuple[int, int], rank: int, lam: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    train = parts["train"]
    mean = train["rating"].mean()
    r = train["rating"] - mean
    items = np.random.default_rng(seed).normal(0, 0.1, (sizes[1], rank))
    for _ in range(ALS_SWEEPS):
        users = solve_side(items, train["user"], train["item"], r, sizes[0], lam)
        items = solve_side(users, train["item"], train["user"], r, sizes[1], lam)
    return users, items, mean


def rmse(parts: dict, split: str, users: np.ndarray, items: np.ndarray, mean: float) -> float:
    s = parts[split]
    pred = np.sum(users[s["user"]] * items[s["item"]], axis=1) + mean
    return float(np.sqrt(np.mean((pred - s["rating"]) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l2", type=float, nargs="+", default=[0.01])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = {l2: run_recipe(l2, Path(folder)) for l2 in args.l2}
    data_cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/planted_ratings.yaml"))
    del data_cfg["_target_"]
    rank = OmegaConf.load(ROOT / "experiments/planted_ratings_mf.yaml").model.rank
    data = planted(**data_cfg)
    parts = {s: data.splits[s].arrays() for s in ("train", "val", "test")}
    sizes = (data.info["num_users"], data.info["num_items"])
    start = time.perf_counter()
    fits = {lam: als(parts, sizes, rank, lam) for lam in ALS_LAMBDAS}
    als_s = time.perf_counter() - start
    best = min(fits, key=lambda lam: rmse(parts, "val", *fits[lam]))
    oracle = data.info["baseline_test_rmse"]["oracle"]
    print(f"train ratings {len(parts['train']['user'])}, oracle test RMSE {oracle:.4f}, "
          f"train mean {data.info['baseline_test_rmse']['train_mean']:.4f}")  # fmt: skip
    for l2, s in runs.items():
        print(f"recipe l2={l2}: test RMSE {s['test/rmse']:.4f} ({s['test/rmse'] / oracle:.3f} x oracle), "
              f"best step {s['best_step']}/{s['steps']}, wall {s['wall_s']:.0f} s "
              f"(process {s['process_s']:.0f} s, compile {s['compile_s']:.0f} s), "
              f"{s['train/steps_per_s']:.0f} steps/s")  # fmt: skip
    test = rmse(parts, "test", *fits[best])
    print(f"numpy ALS rank {rank}, lambda {best} (val-picked of {ALS_LAMBDAS}): test RMSE {test:.4f} "
          f"({test / oracle:.3f} x oracle), {als_s:.1f} s for all {len(ALS_LAMBDAS)} fits")  # fmt: skip


if __name__ == "__main__":
    main()
