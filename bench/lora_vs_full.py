"""LoRA fine-tuning against full fine-tuning on Fashion-MNIST classes 5-9 from 50 labels per class.

    JAX_PLATFORMS=cpu python bench/lora_vs_full.py                  # the two recipes
    JAX_PLATFORMS=cpu python bench/lora_vs_full.py --arms all       # and the LoRA variants below
    JAX_PLATFORMS=cpu python bench/lora_vs_full.py --out /tmp/lora --arms full lora  # reuses /tmp/lora's runs

Results: docs/benchmarks.md, "LoRA fine-tuning" (~4 min pretraining, then ~2-4 min per arm on a
loaded 2-core CPU).

Pretrains +experiment=fashion_mnist_cnn_pretrain (classes 0-4) once, then trains each arm from it
with 3 seeds in one vmapped program: +experiment=fashion_mnist_cnn_finetune (every layer trained:
the conv blocks loaded, a fresh dense layer and head), +experiment=fashion_mnist_cnn_lora and
variants of it (``ARMS``). Prints test accuracy mean +- std, the parameters trained and the
optimizer state's size, read from each run's saved checkpoint (one seed's share).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
COMMON = ("logger=none", "trainer.progress=false")
SEEDS = 3
LORA = "+experiment=fashion_mnist_cnn_lora"


def lora(kernels: str, train: str, exclude: str, lr: str, rank: int = 8, alpha: int = 16) -> list[str]:
    """The LoRA recipe with every setting that the arms vary given, so that they read the same after
    the recipe changes."""
    return [
        LORA, f"optimizer.lora.kernels={kernels}", f"optimizer.lora.train={train}",
        f"trainer.init_from.exclude={exclude}", f"optimizer.learning_rate={lr}",
        f"optimizer.lora.rank={rank}", f"optimizer.lora.alpha={alpha}",
    ]  # fmt: skip


ARMS = {  # name: (what it is, overrides); ``all`` runs every one but ``lora`` (the recipe, one of them)
    "full": ("full fine-tune (`fashion_mnist_cnn_finetune`)", ["+experiment=fashion_mnist_cnn_finetune"]),
    "lora": ("LoRA (`fashion_mnist_cnn_lora`, the recipe)", [LORA]),
    "all_loaded_r8": (
        "LoRA r8 on conv and dense kernels, everything but the head loaded and frozen, lr 3e-3",
        lora("[blocks,dense]", "[head]", "[head]", "3e-3"),
    ),
    "all_loaded_r32": (
        "the same at rank 32, alpha 64",
        lora("[blocks,dense]", "[head]", "[head]", "3e-3", rank=32, alpha=64),
    ),
    "fresh_dense_3e-3": (
        "LoRA r8 on the conv kernels; dense layer and head fresh and trained in full, lr 3e-3",
        lora("[blocks]", "[head,dense]", "[head,dense]", "3e-3"),
    ),
    "fresh_dense_1e-3": (
        "the same at lr 1e-3",
        lora("[blocks]", "[head,dense]", "[head,dense]", "1e-3"),
    ),
    "fresh_dense_norm": (
        "the same at lr 1e-3, batch norm trained too (`train=[head,dense,norm]`)",
        lora("[blocks]", "[head,dense,norm]", "[head,dense]", "1e-3"),
    ),
}


def train(run_dir: Path, *overrides: str) -> dict:
    """The run's summary; a run already finished in ``run_dir`` is read, not trained again."""
    if (run_dir / "summary.json").exists():
        return json.loads((run_dir / "summary.json").read_text())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--arms", nargs="+", default=["full", "lora"], help=f"'all' or of {sorted(ARMS)}")
    parser.add_argument("--out", type=Path, help="where the runs go; finished ones there are read again")
    args = parser.parse_args()
    arms = [a for a in ARMS if a != "lora"] if args.arms == ["all"] else args.arms
    out = args.out or Path(tempfile.mkdtemp(prefix="lora-"))
    pre = train(
        out / "pretrain", "+experiment=fashion_mnist_cnn_pretrain", f"trainer.epochs={args.pretrain_epochs}"
    )
    print(f"pretrain (classes 0-4, {args.pretrain_epochs} epochs): test accuracy {pre['test/accuracy']:.4f}")
    print(
        f"| classes 5-9, 50 labels per class | test accuracy ({SEEDS} seeds) | parameters "
        "(adapters) | optimizer state | wall s |\n|---|---|---|---|---|",
        flush=True,
    )
    for name in arms:
        label, overrides = ARMS[name]
        run_dir = out / name
        summary = train(
            run_dir, *overrides, f"trainer.init_from.path={out / 'pretrain'}", f"trainer.num_seeds={SEEDS}"
        )
        total, adapters, state = sizes(run_dir)
        seeds = ", ".join(f"{a:.3f}" for a in summary.get("test/accuracy_per_seed", []))
        print(
            f"| {label} | {summary['test/accuracy']:.4f} +- {summary['test/accuracy_std']:.4f} ({seeds}) "
            f"| {total:,} ({adapters:,}) | {state:,} | {summary['wall_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
