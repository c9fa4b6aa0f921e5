"""data=table against the built-in data: scikit-learn's wine and diabetes written as CSV and Parquet.

    JAX_PLATFORMS=cpu python bench/own_data_table.py [--seeds 5]

Results: docs/benchmarks.md, "Your own data". Each figure is one `python -m research.train`
process, as a user runs it, training `--seeds` seeds as replicas (trainer.num_seeds), scored
from its summary.json (the mean over the seeds, and their spread):
  - diabetes: the recipe diabetes_mlp_regression on data=diabetes (the built-in loader), and the
    same recipe on data=table reading diabetes.csv / diabetes.parquet (target `target`).
    Both carve 20% test then 10% val by split_seed 0 and standardise by the train rows, so the
    figures should agree within noise (they are the same rows: equal to float precision).
  - wine: the default experiment (MLP 512-256, Adam, 30 epochs) on data=table reading wine.csv /
    wine.parquet, the class names as text (class_0..2), split stratified; the target is >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ("logger=none", "trainer.progress=false")


def write_tables(folder: Path) -> None:
    """wine.{csv,parquet} (13 features, text classes) and diabetes.{csv,parquet} (10 raw features)."""
    from sklearn.datasets import load_diabetes, load_wine

    wine = load_wine(as_frame=True)
    frame = wine.frame.assign(target=[wine.target_names[i] for i in wine.target])
    frame.to_csv(folder / "wine.csv", index=False)
    frame.to_parquet(folder / "wine.parquet")
    diabetes = load_diabetes(scaled=False, as_frame=True).frame
    diabetes.to_csv(folder / "diabetes.csv", index=False)
    diabetes.to_parquet(folder / "diabetes.parquet")


def train(run_dir: Path, *overrides: str) -> tuple[dict, float]:
    """(summary.json, seconds) of one research.train process."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "research.train", *overrides, *COMMON, f"hydra.run.dir={run_dir}"]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True)
    return json.loads((run_dir / "summary.json").read_text()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    seeds = f"trainer.num_seeds={args.seeds}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tables(folder)
        cases = {
            "diabetes built-in": ("+experiment=diabetes_mlp_regression",),
            **{
                f"diabetes {ext}": ("+experiment=diabetes_mlp_regression", "data=table",
                                    f"data.path={folder / f'diabetes.{ext}'}", "data.target=target")
                for ext in ("csv", "parquet")
            },
            **{
                f"wine {ext}": ("data=table", f"data.path={folder / f'wine.{ext}'}", "data.target=target",
                                "name=wine_mlp")
                for ext in ("csv", "parquet")
            },
        }  # fmt: skip
        keys = {"diabetes": ("test/r2", "test/rmse_original"), "wine": ("test/accuracy",)}
        print(f"| data | {args.seeds} seeds: test figures, mean (std) | seconds |\n|---|---|---|")
        for name, overrides in cases.items():
            summary, seconds = train(folder / name.replace(" ", "_"), *overrides, seeds)
            figures = ", ".join(
                f"{k} {summary[k]:.4f} ({summary.get(f'{k}_std', 0.0):.4f})" for k in keys[name.split()[0]]
            )
            print(f"| {name} | {figures} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
