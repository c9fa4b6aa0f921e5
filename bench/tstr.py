"""Train on synthetic, test on real (TSTR) against train on real (TRTR), for class-conditional GANs.

    JAX_PLATFORMS=cpu python bench/tstr.py [digits] [fashion] [--out DIR] [--num-examples N]

For each dataset: trains its cGAN recipe, writes ``num_examples`` balanced samples with
``python -m research.generate``, trains the classifier recipe on them (``data=generated``:
validation from the samples, test on the real test split) and on the real data, and prints
both test accuracies with the wall time of each step (whole processes). Results and the
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
# dataset -> (cGAN recipe, classifier recipe, samples written)
SETUPS = {
    "digits": ("digits_cgan", "digits_cnn", 10_000),
    "fashion": ("fashion_mnist_cgan", "fashion_mnist_cnn", 30_000),
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
    gan_recipe, classifier, default_n = SETUPS[name]
    n = num_examples or default_n
    gan = out / name / "cgan"
    _, gan_s = train(gan, f"+experiment={gan_recipe}")
    gen_s = timed([sys.executable, "-m", "research.generate", f"run={gan}", f"num_examples={n}"])
    on_samples = (f"+experiment={classifier}", "data=generated", f"data.run={gan}")
    synthetic, tstr_s = train(out / name / "tstr", *on_samples)
    real, trtr_s = train(out / name / "trtr", f"+experiment={classifier}")
    cells = [
        name, f"{gan_recipe} ({gan_s:.0f} s)", f"{n:,} ({gen_s:.0f} s)", classifier,
        f"{synthetic['steps']:,} / {real['steps']:,}", f"{synthetic['test/accuracy']:.4f} ({tstr_s:.0f} s)",
        f"{real['test/accuracy']:.4f} ({trtr_s:.0f} s)",
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=["digits"], choices=sorted(SETUPS))
    parser.add_argument("--out", default=None, help="where the runs go (default: a fresh temporary folder)")
    parser.add_argument("--num-examples", type=int, default=None, help="samples (default: per dataset)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tstr-"))
    print(f"runs in {out}")
    header = ["data", "generator (train wall)", "samples (generate wall)", "classifier",
              "steps synthetic / real", "TSTR test accuracy (wall)", "TRTR test accuracy (wall)"]  # fmt: skip
    print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for name in args.datasets:
        print(bench(name, out, args.num_examples), flush=True)


if __name__ == "__main__":
    main()
