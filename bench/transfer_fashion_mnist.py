"""Fine-tuning vs linear probe vs training from scratch on Fashion-MNIST classes 5-9 from 50 labels per class.

    JAX_PLATFORMS=cpu python bench/transfer_fashion_mnist.py [pretrain epochs, default 5]

Results: docs/benchmarks.md, "Transfer learning" (~15 min on a 2-core CPU).

Pretrains +experiment=fashion_mnist_cnn_pretrain (classes 0-4, all labels) once, then trains
+experiment=fashion_mnist_cnn_finetune from it (conv blocks loaded, fresh dense layer and head),
the same loading the dense layer too, the linear probe from it, and the fine-tune recipe from
scratch (trainer.init_from.path=null), each with 3 seeds in one vmapped program
(trainer.num_seeds=3); prints test accuracy mean +- std over the seeds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ("logger=none", "trainer.progress=false")
SEEDS = 3


def train(run_dir: Path, *overrides: str) -> dict:
    cmd = [sys.executable, "-m", "research.train", *overrides, *COMMON, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def main(pretrain_epochs: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="transfer-"))
    pre = train(
        out / "pretrain", "+experiment=fashion_mnist_cnn_pretrain", f"trainer.epochs={pretrain_epochs}"
    )
    print(f"pretrain (classes 0-4, {pretrain_epochs} epochs): test accuracy {pre['test/accuracy']:.4f}")
    arms = {
        "fine-tune": ("+experiment=fashion_mnist_cnn_finetune", f"trainer.init_from.path={out / 'pretrain'}"),
        "fine-tune, dense layer loaded too": (
            "+experiment=fashion_mnist_cnn_finetune",
            f"trainer.init_from.path={out / 'pretrain'}",
            "trainer.init_from.exclude=[head]",
        ),
        "linear probe": (
            "+experiment=fashion_mnist_cnn_linear_probe",
            f"trainer.init_from.path={out / 'pretrain'}",
        ),
        "scratch": ("+experiment=fashion_mnist_cnn_finetune", "trainer.init_from.path=null"),
    }
    print(f"| classes 5-9, 50 labels per class | test accuracy (mean +- std, {SEEDS} seeds) |\n|---|---|")
    for name, overrides in arms.items():
        run_dir = out / name.replace(" ", "_").replace(",", "")
        summary = train(run_dir, *overrides, f"trainer.num_seeds={SEEDS}")
        print(f"| {name} | {summary['test/accuracy']:.4f} +- {summary['test/accuracy_std']:.4f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
