"""One-class anomaly detection over every class: mean +- std ROC AUC of an autoencoder recipe.

    python bench/autoencoder_anomaly.py digits_autoencoder [override ...]
    python bench/autoencoder_anomaly.py fashion_mnist_autoencoder_anomaly

Runs the recipe once per normal class (a Hydra multirun), then ``research.compare`` folds
the classes into one row. Targets (issue 10): digits >= 0.90, Fashion-MNIST >= 0.85.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main(recipe: str, *overrides: str) -> None:
    sweep = Path("runs") / "bench" / f"{recipe}_anomaly_{time.strftime('%Y%m%d-%H%M%S')}"
    classes = ",".join(str(k) for k in range(10))
    start = time.time()
    subprocess.run(
        [sys.executable, "-m", "research.train", "-m", f"+experiment={recipe}",
         f"task.normal_class={classes}", "logger=none", "trainer.progress=false", f"hydra.sweep.dir={sweep}",
         *overrides],
        check=True,
    )  # fmt: skip
    print(f"{time.time() - start:.0f} s for the ten classes")
    compare = [sys.executable, "-m", "research.compare", str(sweep), "--ignore", "task.normal_class"]
    subprocess.run([*compare, "--metrics", "test/roc_auc,val/roc_auc", "--no-plots"], check=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
