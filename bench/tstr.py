"""Train on synthetic, test on real (TSTR) against train on real (TRTR), for class-conditional GANs.

    JAX_PLATFORMS=cpu python bench/tstr.py [digits] [fashion] [--out DIR] [--num-examples N]

For each dataset: trains its cGAN recipe, writes ``num_examples`` balanced samples with
``python -m research.generate``, trains the classifier recipe on them (``data=generated``:
validation from the samples, test on the real test split) and on the real data (for fashion
capped at the steps it took on the samples), and prints both test accuracies with the wall
time of each step (whole processes). Results and the
commands are in docs/benchmarks.md ("Train on synthetic, test on real").
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
# dataset -> (cGAN recipe, classifier recipe, samples written, whether the real-data classifier is
# capped at the steps it took on the samples: fashion_mnist_cnn's 15 epochs of the 54,000 real
# images would take ~25 min here, the same steps as on 20,000 samples ~8 min)
SETUPS = {
    "digits": ("digits_cgan", "digits_cnn", 10_000, False),
    "fashion": ("fashion_mnist_cgan", "fashion_mnist_cnn", 20_000, True),
}


def timed(cmd: list[str]) -> float:
    """Run ``cmd`` from the repository root; its wall seconds, or exit with its error."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def train(run_dir: Path, *overrides: str) -> tuple[dict, float]:
    wall = timed([sys.executable, "-m", "research.train", *overrides, *COMMON, f"hydra.run.dir={run_dir}"])
    return json.loads((run_dir / "summary.json").read_text()), wall


def bench(name: str, out: Path, num_examples: int | None) -> str:
    """One markdown row: TSTR and TRTR test accuracy, and what each step cost."""
    gan_recipe, classifier, default_n, same_steps = SETUPS[name]
    n = num_examples or default_n
    gan = out / name / "cgan"
    _, gan_s = train(gan, f"+experiment={gan_recipe}")
    gen_s = timed([sys.executable, "-m", "research.generate", f"run={gan}", f"num_examples={n}"])
    synthetic, tstr_s = train(out / name / "tstr", f"+experiment={classifier}", "data=generated", f"data.run={gan}")
    cap = [f"trainer.max_steps={synthetic['steps']}"] if same_steps else []
    real, trtr_s = train(out / name / "trtr", f"+experiment={classifier}", *cap)
    steps = f"{synthetic['steps']:,} / {real['steps']:,}"
    return (
        f"| {name} | {gan_recipe} ({gan_s:.0f} s) | {n:,} ({gen_s:.0f} s) | {classifier} | "
        f"{steps} | {synthetic['test/accuracy']:.4f} ({tstr_s:.0f} s) | {real['test/accuracy']:.4f} ({trtr_s:.0f} s) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=["digits"], choices=sorted(SETUPS))
    parser.add_argument("--out", default=None, help="where the runs go (default: a fresh temporary folder)")
    parser.add_argument("--num-examples", type=int, default=None, help="samples to write (default: per dataset)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tstr-"))
    print(f"runs in {out}")
    print("| data | generator (train wall) | samples (generate wall) | classifier | steps synthetic / real "
          "| TSTR test accuracy (wall) | TRTR test accuracy (wall) |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name in args.datasets:
        print(bench(name, out, args.num_examples), flush=True)


if __name__ == "__main__":
    main()
