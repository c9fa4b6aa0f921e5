"""The supervised recipes on real data, each run as a user runs it, against its target.

    JAX_PLATFORMS=cpu python bench/supervised_recipes.py [recipe ...] [--seeds 0 1 2]

Results: docs/benchmarks.md, "The supervised recipes against their targets". With no recipe
named it runs the fast ones (~8 min a seed on a quiet 2-core CPU, most of it the CNN); the ViT
(~4 min a seed) and the adding problem (~18 + 5 min) are named to be run.

Each recipe is one `python -m research.train +experiment=<recipe> seed=<s>` process (defaults
otherwise: evaluation, checkpoints, the test pass), timed whole, then scored from its
summary.json against the target the recipe's header states. diabetes is also scored against
ridge regression on the same split (bench/regression_baselines.py), co2 against the source's
naive forecasts, which its summary records.
"""

from __future__ import annotations

import argparse
import json
import operator
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from regression_baselines import ridge_diabetes

ROOT = Path(__file__).resolve().parent.parent
COMMON = ("logger=none", "trainer.progress=false")

Score = Callable[[dict], tuple[str, bool]]  # summary -> (what it reached, whether the target holds)


COMPARE = {">=": operator.ge, "<": operator.lt, ">": operator.gt}


def target(key: str, op: str, value: float) -> Score:
    """The summary's `key` against `value`, e.g. target("val/loss", "<", 1.9)."""
    return lambda s: (f"{key} {s[key]:.6g} (target {op} {value})", COMPARE[op](s[key], value))


def beats_naive(s: dict) -> tuple[str, bool]:
    naive = {k: v for k, v in s.items() if k.startswith("test/baseline_")}
    text = ", ".join(f"{k.removeprefix('test/baseline_')} {v:.2f}" for k, v in naive.items())
    rmse = s["test/rmse_original"]
    return f"test/rmse_original {rmse:.3f} ({text})", rmse < min(naive.values())


def beats_ridge(s: dict) -> tuple[str, bool]:
    ridge = ridge_diabetes()["ridge_test_r2"]
    return f"test/r2 {s['test/r2']:.4f} (ridge {ridge:.4f})", s["test/r2"] >= ridge


RECIPES: dict[str, Score] = {
    "fashion_mnist_cnn": target("test/accuracy", ">=", 0.91),
    "shakespeare_char_transformer": target("val/loss", "<", 1.9),
    "diabetes_mlp_regression": beats_ridge,
    "co2_gru_forecast": beats_naive,
    "fashion_mnist_vit": target("test/accuracy", ">=", 0.87),
    "adding_problem_lstm": target("test/mse", "<", 0.01),
    "adding_problem_rnn": target("test/mse", ">", 0.1),
}
FAST = ("fashion_mnist_cnn", "shakespeare_char_transformer", "diabetes_mlp_regression", "co2_gru_forecast")


def train(run_dir: Path, recipe: str, seed: int) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "research.train", f"+experiment={recipe}", f"seed={seed}", *COMMON,
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text()), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=list(FAST), help=f"any of {', '.join(RECIPES)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    if unknown := set(args.recipes) - set(RECIPES):
        parser.error(f"unknown recipe {', '.join(sorted(unknown))}; choose from {', '.join(RECIPES)}")
    out = Path(tempfile.mkdtemp(prefix="recipes-"))
    print("| recipe | seed | wall | steps | train steps/s | reached | target met |")
    print("|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        for seed in args.seeds:
            summary, wall = train(out / f"{recipe}_{seed}", recipe, seed)
            reached, met = RECIPES[recipe](summary)
            speed = summary["train/steps_per_s"]
            print(f"| `{recipe}` | {seed} | {wall:.0f} s | {summary['steps']:,} | {speed:.1f} | {reached} | "
                  f"{'yes' if met else 'NO'} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
