"""Frechet distance of the DCGAN's and the VAE's samples, in the features of a classifier trained here.

    JAX_PLATFORMS=cpu python bench/frechet_gan_vae.py [--data fashion_mnist|digits]
        [--classifier-epochs N] [--gan-epochs N] [--vae-epochs N] [--max-steps N]
        [--num-samples N] [--images DIR] [override ...]

Trains the data's classifier recipe (fashion_mnist_cnn, briefly: its features are the space
the distance is measured in; Inception weights cannot be downloaded here), then its DCGAN
and VAE recipes with +evaluators=frechet pointed at it. Prints the GAN's validation distance
at every evaluation, both generators' final test distance and the real-vs-real floor (two
disjoint halves of the test set), and copies the final sample grids to --images as PNG.
Trailing ``key=value`` overrides go to the GAN and VAE runs (e.g. trainer.epochs=2);
--max-steps caps all three runs (a quick check that the pipeline works, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ("logger=none", "trainer.progress=false")
RECIPES = {  # data -> (classifier, GAN, VAE)
    "fashion_mnist": ("fashion_mnist_cnn", "fashion_mnist_dcgan", "fashion_mnist_vae"),
    "digits": ("digits_cnn", "digits_dcgan", "digits_vae"),
}
# Half the test split at most (the floor compares two disjoint halves): 2000 of Fashion-MNIST's
# 10000 (each evaluation during training costs less; docs/benchmarks.md's figures); digits' 359
# test images allow 179.
DEFAULT_SAMPLES = {"fashion_mnist": 2000, "digits": 179}
# A brief classifier is enough for a feature space; digits' own recipe takes ~10 s.
CLASSIFIER_EPOCHS = {"fashion_mnist": 3, "digits": 0}


def train(run_dir: Path, *overrides: str) -> tuple[dict, float]:
    """(summary, wall seconds) of one training run through the CLI."""
    cmd = [sys.executable, "-m", "research.train", *overrides, *COMMON, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text()), time.perf_counter() - start


def curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val/frechet_distance) at every evaluation during training."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["val/frechet_distance"]) for r in records if "val/frechet_distance" in r]


def main(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="frechet-"))
    classifier, gan, vae = RECIPES[args.data]
    cap = [f"trainer.max_steps={args.max_steps}"] if args.max_steps else []
    brief = CLASSIFIER_EPOCHS[args.data] if args.classifier_epochs is None else args.classifier_epochs
    epochs = [f"trainer.epochs={brief}"] if brief else []
    summary, wall = train(out / "classifier", f"+experiment={classifier}", *epochs, *cap)
    print(f"{classifier}: test accuracy {summary['test/accuracy']:.4f} ({wall:.0f} s)")
    samples = args.num_samples or DEFAULT_SAMPLES[args.data]
    frechet = ("+evaluators=frechet", f"evaluators.frechet.classifier_run={out / 'classifier'}",
               f"evaluators.frechet.num_samples={samples}")  # fmt: skip
    results = {}
    for name, epochs in ((gan, args.gan_epochs), (vae, args.vae_epochs)):
        length = [f"trainer.epochs={epochs}"] if epochs else []
        summary, wall = train(out / name, f"+experiment={name}", *frechet, *length, *cap, *args.overrides)
        results[name] = summary
        print(f"{name}: {summary['steps']} steps in {wall:.0f} s")
        if args.images:
            target = Path(args.images) / f"{name}_samples.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / name / "plots" / "samples.png", target)
            print(f"  final sample grid -> {target}")
    print(f"\n| {gan} step | val Frechet distance |\n|---|---|")
    for step, distance in curve(out / gan):
        print(f"| {step} | {distance:.2f} |")
    print("\n| test split | Frechet distance |\n|---|---|")
    for name in (gan, vae):
        print(f"| {name} samples | {results[name]['test/frechet_distance']:.2f} |")
    print(f"| real vs real (two halves: the floor) | {results[gan]['test/frechet_floor']:.2f} |")
    print(f"\nruns in {out}")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(RECIPES), default="fashion_mnist")
    parser.add_argument("--classifier-epochs", type=int, default=None, help="0: the recipe's own")
    parser.add_argument("--gan-epochs", type=int, default=0, help="0: the recipe's own")
    parser.add_argument("--vae-epochs", type=int, default=0, help="0: the recipe's own")
    parser.add_argument("--max-steps", type=int, default=0, help="cap every run (0: the recipes' own)")
    parser.add_argument("--num-samples", type=int, default=0, help="0: half the test split")
    parser.add_argument("--images", default=str(ROOT / "docs" / "images"), help="'' to copy no grids")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the GAN and VAE runs")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse())
