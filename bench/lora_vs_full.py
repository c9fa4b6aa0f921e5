"""LoRA fine-tuning against full fine-tuning on Fashion-MNIST classes 5-9 from 50 labels per class.

    JAX_PLATFORMS=cpu python bench/lora_vs_full.py [pretrain epochs, default 5]

Results: docs/benchmarks.md, "LoRA fine-tuning" (~25 min on a loaded 2-core CPU).

Pretrains +experiment=fashion_mnist_cnn_pretrain (classes 0-4) once, then trains from it
+experiment=fashion_mnist_cnn_finetune (every layer trained: the conv blocks loaded, a fresh dense
layer and head) and +experiment=fashion_mnist_cnn_lora (everything loaded but the head and frozen,
LoRA adapters on the conv and dense kernels), each with 3 seeds in one vmapped program. Prints test
accuracy mean +- std, the parameters trained and the optimizer state's size, read from each run's
saved checkpoint (one seed's share).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
COMMON = ("logger=none", "trainer.progress=false")
SEEDS = 3


def train(run_dir: Path, *overrides: str) -> dict:
    cmd = [sys.executable, "-m", "research.train", *overrides, *COMMON, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def sizes(run_dir: Path) -> tuple[int, int, int]:
    """(parameters, adapter parameters, optimizer-state numbers) of one seed, from the checkpoint."""
    from research.engine.init_from import checkpoint_state_dir, read_arrays
    from research.models.lora import is_adapter

    arrays = read_arrays(checkpoint_state_dir(run_dir))
    params = {n: a.size // SEEDS for n, a in arrays.items() if n.startswith("params/")}
    state = sum(a.size // SEEDS for n, a in arrays.items() if n.startswith("opt_state/") and a.ndim > 1)
    return sum(params.values()), sum(v for n, v in params.items() if is_adapter(n)), state


def main(pretrain_epochs: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="lora-"))
    pre = train(
        out / "pretrain", "+experiment=fashion_mnist_cnn_pretrain", f"trainer.epochs={pretrain_epochs}"
    )
    print(f"pretrain (classes 0-4, {pretrain_epochs} epochs): test accuracy {pre['test/accuracy']:.4f}")
    arms = {"full fine-tune": "fashion_mnist_cnn_finetune", "LoRA": "fashion_mnist_cnn_lora"}
    print(
        f"| classes 5-9, 50 labels per class | test accuracy ({SEEDS} seeds) | parameters "
        "(adapters) | optimizer state | wall s |\n|---|---|---|---|---|"
    )
    for name, recipe in arms.items():
        run_dir = out / recipe
        summary = train(
            run_dir,
            f"+experiment={recipe}",
            f"trainer.init_from.path={out / 'pretrain'}",
            f"trainer.num_seeds={SEEDS}",
        )
        total, adapters, state = sizes(run_dir)
        print(
            f"| {name} (`{recipe}`) | {summary['test/accuracy']:.4f} +- {summary['test/accuracy_std']:.4f} "
            f"| {total:,} ({adapters:,}) | {state:,} | {summary['wall_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
