"""Issue 33's figures: U-Net segmentation (with and without skips) and denoising on Fashion-MNIST.

    python bench/segmentation_denoising.py                    # train the three recipes, then report
    python bench/segmentation_denoising.py --runs DIR         # report runs already under DIR/<recipe>
    python bench/segmentation_denoising.py --segmentation trainer.max_steps=640 trainer.eval_every=320
                                   # the two segmentation recipes only (overrides: a shortened run)

Trains fashion_mnist_unet_segmentation, fashion_mnist_segmentation_no_skip and
fashion_mnist_denoising one after another (``nice``: the machine may be shared), each in its
own run directory, and prints the wall time, CPU seconds and load average of each, test mean
IoU and per-class IoU of both segmentation networks, and test PSNR/SSIM of the noisy and
denoised images. A run that has not finished is reported from its last validation record.
``--segmentation`` trains only the two segmentation recipes, one after the other, with any
overrides given after it.
Targets: mean IoU >= 0.75 with the U-Net and above the no-skip network; PSNR gain >= 6 dB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SEGMENTATION = ("fashion_mnist_unet_segmentation", "fashion_mnist_segmentation_no_skip")
DENOISING = "fashion_mnist_denoising"
CLASSES = ["background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip


def command(recipe: str, run_dir: Path, overrides: list[str]) -> list[str]:
    return ["nice", "-n", "5", sys.executable, "-m", "research.train", f"+experiment={recipe}", "logger=none",
            "trainer.progress=false", f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip


def cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    times = os.times()
    return times.children_user + times.children_system


def train(recipe: str, run_dir: Path, overrides: list[str]) -> None:
    start, cpu, load = time.time(), cpu_seconds(), os.getloadavg()[0]
    subprocess.run(command(recipe, run_dir, overrides), check=True)
    print(f"{recipe}: {time.time() - start:.0f} s wall, {cpu_seconds() - cpu:.0f} CPU s, "
          f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip


def figures(run_dir: Path) -> dict:
    """summary.json's figures, or (unfinished) the last validation record's, with the step."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        return {"finished": True, **json.loads(summary.read_text())}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if any(k.startswith("val/") for k in r)]
    return {"finished": False, **(last[-1] if last else {"step": 0})}


def report(root: Path) -> None:
    for recipe in SEGMENTATION:
        f = figures(root / recipe)
        split = "test" if f["finished"] else "val"
        state = f"{f.get('steps', f.get('step'))} steps, wall {f.get('wall_s', float('nan')):.0f} s"
        print(f"\n{recipe} ({'finished' if f['finished'] else 'unfinished, last evaluation'}: {state})")
        print(f"  {split} mean IoU {f.get(f'{split}/mean_iou', float('nan')):.4f}, "
              f"pixel accuracy {f.get(f'{split}/pixel_accuracy', float('nan')):.4f}")  # fmt: skip
        for name, iou in zip(CLASSES, f.get(f"{split}/per_class_iou", []), strict=False):
            print(f"    {name:12s} {iou:.3f}")
    if not (root / DENOISING).is_dir():
        return
    f = figures(root / DENOISING)
    split = "test" if f["finished"] else "val"
    print(
        f"\n{DENOISING} ({f.get('steps', f.get('step'))} steps, wall {f.get('wall_s', float('nan')):.0f} s)"
    )
    for key in ("psnr_noisy", "psnr_denoised", "psnr_gain", "ssim_noisy", "ssim_denoised"):
        print(f"  {split}/{key} {f.get(f'{split}/{key}', float('nan')):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=Path, default=None, help="report the runs under this folder; train none"
    )
    parser.add_argument(
        "--segmentation", nargs="*", metavar="OVERRIDE", default=None,
        help="train only the two segmentation recipes, one after the other, with these overrides",
    )  # fmt: skip
    args = parser.parse_args()
    root = args.runs or Path("runs") / "bench" / f"segmentation_denoising_{time.strftime('%Y%m%d-%H%M%S')}"
    if args.runs is None and args.segmentation is not None:
        for recipe in SEGMENTATION:
            train(recipe, root / recipe, args.segmentation)
    elif args.runs is None:
        for recipe in (*SEGMENTATION, DENOISING):
            train(recipe, root / recipe, [])
    report(root)


if __name__ == "__main__":
    main()
