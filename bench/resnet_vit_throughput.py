"""Examples/s of the CIFAR-10 ResNet-20 and ViT recipes' train steps (issue 30's GPU figure).

The framework's own compiled train chunk (``bench/gpu_throughput.py``'s machinery: K scanned steps
per dispatch, compile excluded) on ``+experiment=cifar10_resnet20`` and ``+experiment=cifar10_vit``
with their model, optimizer and augmentation, fed CIFAR-shaped random images through
``data=arrays`` (throughput does not depend on the pixels, and the device machine has no network
to fetch CIFAR-10). MFU uses XLA's FLOP count of one step, a lower bound on a GPU (cuBLAS/cuDNN
custom calls are partly uncounted).

    python bench/resnet_vit_throughput.py                       # batch 128 and 1024, float32 and bfloat16
    python bench/resnet_vit_throughput.py --tiny --seconds 1    # small models: checks the script on a CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import peak_flops, rate, row, setup, step_flops, steps_per_s  # noqa: E402

RECIPES = {"ResNet-20 (cifar10_resnet20)": "cifar10_resnet20", "ViT 6x128 (cifar10_vit)": "cifar10_vit"}
TINY = {"cifar10_resnet20": ["model.stage_sizes=[1,1,1]"], "cifar10_vit": ["model.depth=1", "model.dim=32"]}
IMAGES = 4096  # random CIFAR-shaped training images (uint8, 32x32x3)


def write_images(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "cifar_shaped.npz"
    np.savez(
        path, image=rng.integers(0, 256, (IMAGES, 32, 32, 3), np.uint8), label=rng.integers(0, 10, IMAGES)
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per case (whole calls)")
    parser.add_argument("--per-call", type=int, default=16, help="trainer.steps_per_call")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument(
        "--tiny", action="store_true", help="small models, batch 8, float32: checks the script"
    )
    args = parser.parse_args()
    if args.tiny:
        args.batches, args.precisions = [8], ["float32"]
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()} | jax {jax.__version__}")
    row(
        "model",
        "batch",
        "precision",
        "steps/s",
        "examples/s",
        "GFLOP/step (XLA)",
        "TFLOP/s",
        "MFU (XLA count)",
    )
    row(*["---"] * 8)
    with tempfile.TemporaryDirectory() as tmp:
        data = [
            "data=arrays",
            f"data.path={write_images(Path(tmp))}",
            f"trainer.steps_per_call={args.per_call}",
        ]
        for name, recipe in RECIPES.items():
            overrides = [f"+experiment={recipe}", *data, *(TINY[recipe] if args.tiny else [])]
            for batch in args.batches:
                for precision in args.precisions:
                    task, feed, programs, state = setup(overrides, batch, precision, seeds=1)
                    flops = step_flops(task, feed)
                    steps = steps_per_s(feed, programs, state, args.seconds, args.per_call)
                    peak, source = peak_flops(precision)
                    achieved = steps * flops
                    row(
                        name, batch, precision, rate(steps), rate(steps * batch), f"{flops / 1e9:.2f}",
                        f"{achieved / 1e12:.2f}", f"{achieved / peak:.1%} of {peak / 1e12:.3g} ({source})",
                    )  # fmt: skip


if __name__ == "__main__":
    main()
