"""Model compression on Fashion-MNIST: magnitude pruning at 50/80/90/95% sparsity and int8 weights.

    JAX_PLATFORMS=cpu python bench/compression.py                          # the recipes' 10 epochs
    JAX_PLATFORMS=cpu python bench/compression.py --epochs 3 --out /tmp/compression   # shorter

Results: docs/benchmarks.md, "Pruning and int8 quantization" (each arm is fashion_mnist_cnn's
~317 s on a quiet 2-core CPU at 10 epochs; the five arms run one after another).

Every arm is one run of the same schedule and seed: dense ``+experiment=fashion_mnist_cnn`` and
``+experiment=fashion_mnist_cnn_pruned`` at each sparsity. Each is measured on the test split at
its *latest* checkpoint (``research.evaluate checkpoint=latest``): the pruned runs' best checkpoint
by validation accuracy may come from before the schedule reached its target. The sparsity column
counts the zeros of the kernels in that checkpoint. Then ``research.quantize`` measures the dense
run with int8 weights (per-channel scales) against float32, with the exported files' sizes.
An arm whose run directory under ``--out`` already holds a summary is read, not trained again
(and its eval.json not measured again).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
COMMON = ("logger=none", "trainer.progress=false")
SPARSITIES = (0.9, 0.95, 0.8, 0.5)  # the acceptance line's 90% first


def command(module: str, *args: str) -> str:
    """``python -m <module> <args>`` in this checkout; its stdout, or the run stops with its stderr."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return proc.stdout


def train(run_dir: Path, epochs: int, *overrides: str) -> dict:
    if not (run_dir / "summary.json").exists():
        command("research.train", *overrides, f"trainer.epochs={epochs}", *COMMON, f"hydra.run.dir={run_dir}")
    if not (run_dir / "eval.json").exists():
        command("research.evaluate", f"run={run_dir}", "checkpoint=latest")
    return json.loads((run_dir / "summary.json").read_text()) | {
        "latest": json.loads((run_dir / "eval.json").read_text())
    }


def kernel_zeros(run_dir: Path) -> float:
    """The fraction of zeros over the kernels of the latest checkpoint."""
    import jax

    from research.experiment import open_saved
    from research.optim import param_path

    params = open_saved(run_dir, checkpoint="latest").state["params"]
    leaves = jax.tree_util.tree_leaves_with_path(params)
    kernels = [np.asarray(w) for p, w in leaves if param_path(p).endswith("kernel")]
    return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


def accuracy(found: dict) -> float:
    return next(v for k, v in found.items() if k.endswith("test/accuracy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/compression"))
    parser.add_argument("--sparsities", type=float, nargs="+", default=list(SPARSITIES))
    args = parser.parse_args()
    dense_dir = args.out / "dense"
    dense = train(dense_dir, args.epochs, "+experiment=fashion_mnist_cnn")
    base = accuracy(dense["latest"])
    print(
        f"fashion_mnist_cnn, {args.epochs} epochs, seed 0; test accuracy at the latest checkpoint\n\n"
        "| arm | kernel zeros | test accuracy | vs dense (points) | best-val checkpoint's test accuracy "
        "| wall s |\n"
        "|---|---|---|---|---|---|\n"
        f"| dense | {kernel_zeros(dense_dir):.3f} | {base:.4f} | | {dense['test/accuracy']:.4f} "
        f"| {dense['wall_s']:.0f} |",
        flush=True,
    )
    for sparsity in args.sparsities:
        run_dir = args.out / f"pruned_{sparsity:g}"
        recipe = ("+experiment=fashion_mnist_cnn_pruned", f"optimizer.prune.sparsity={sparsity}")
        s = train(run_dir, args.epochs, *recipe)
        acc = accuracy(s["latest"])
        print(
            f"| pruned {sparsity:.0%} (global) | {kernel_zeros(run_dir):.3f} | {acc:.4f} "
            f"| {100 * (acc - base):+.2f} | {s['test/accuracy']:.4f} | {s['wall_s']:.0f} |",
            flush=True,
        )
    out = command("research.quantize", f"run={dense_dir}", "checkpoint=latest")
    report = json.loads((dense_dir / "quantized" / "quantize.json").read_text())
    print(f"\nresearch.quantize run=<dense> checkpoint=latest:\n{out}")
    f32, int8 = report["float32"], report["int8"]
    print(
        "| weights | test accuracy | params.npz bytes |\n|---|---|---|\n"
        f"| float32 | {f32[report['metric']]:.4f} | {f32['bytes']:,} |\n"
        f"| int8, per-channel scales | {int8[report['metric']]:.4f} | {int8['bytes']:,} |\n\n"
        f"int8 - float32: {100 * report['change']:+.2f} points; "
        f"size ratio {report['size_ratio']:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
