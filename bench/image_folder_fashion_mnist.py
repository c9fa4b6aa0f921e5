"""Fashion-MNIST as a folder of PNG files: data=image_folder against the same recipe on TFDS data.

    python bench/image_folder_fashion_mnist.py [--folder DIR] [--out FILE] [--runs tfds,memory,streamed]
                                                [--epochs N]

Writes the 70,000 images of Debian's dataset-fashion-mnist IDX files (research/data/fashion_mnist.py)
as ``DIR/{train,test}/<class>/<index>.png`` (the user's own test split; val carved from train, as
TFDS's recipe carves it), then trains ``+experiment=fashion_mnist_cnn`` three times: on the TFDS
build of the IDX files, on the folder in memory, and on the folder streamed (``data.in_memory=false``),
side by side (``--epochs``: fewer than the recipe's 10 on a machine too busy for three full runs).
It reports each run's test accuracy, steps/s and wall time, and how long the folder's first and
second loads take (decoding once, then reading the cache), measured while the runs train.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from research.data import fashion_mnist  # noqa: E402

RUNS = {
    "tfds": [],
    "memory": ["data=image_folder", "data.in_memory=true"],
    "streamed": ["data=image_folder", "data.in_memory=false"],
}


def folder_name(label: int) -> str:
    return fashion_mnist.CLASS_NAMES[label].replace("/", "_")  # "T-shirt/top" is not a folder name


def make_folder(out: Path, idx_dir: str = fashion_mnist.DEBIAN_IDX_DIR) -> Path:
    """The IDX files as PNG files in class folders (skipped when ``out`` is complete already)."""
    from PIL import Image

    done = out / ".complete"
    if done.is_file():
        return out
    for split in ("train", "test"):
        images, labels = fashion_mnist.read_split(idx_dir, split)
        for label in range(len(fashion_mnist.CLASS_NAMES)):
            (out / split / folder_name(label)).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image[..., 0], "L").save(out / split / folder_name(int(label)) / f"{i:05d}.png")
    done.write_text("")
    return out


def load_seconds(folder: Path, cache_dir: Path) -> float:
    """Wall time of one ``image_folder.load`` of the folder (in memory), in a fresh process."""
    code = (
        "import time; t = time.perf_counter(); from research.data.image_folder import load; "
        f"load(path={str(folder)!r}, image_size=[28, 28], channels=None, interpolation='bilinear', "
        "batch_size=128, eval_batch_size=1000, val_fraction=0.1, test_fraction=0.1, split_seed=0, "
        f"in_memory=True, memory_budget_mb=2048, cache_dir={str(cache_dir)!r}, "
        "workers=2, images_per_worker=2000, "
        "pixel_max=255, normalize={'mean': None, 'std': None}, augment={}); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def start(name: str, overrides: list[str], folder: Path, runs_dir: Path, cache_dir: Path, epochs: int | None):
    """A training run of the recipe on one data source, started in the background."""
    run_dir = runs_dir / name
    data = [f"data.path={folder}", f"data.cache_dir={cache_dir}"] if overrides else []
    length = [f"trainer.epochs={epochs}"] if epochs else []
    cmd = [
        sys.executable, "-m", "research.train", "+experiment=fashion_mnist_cnn", *overrides, *data, *length,
        "logger=none", "trainer.progress=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    return (
        run_dir,
        time.perf_counter(),
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT),
    )


def result(name: str, run_dir: Path, started: float, proc: subprocess.Popen) -> dict:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{err[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "test/accuracy": summary["test/accuracy"],
        "val/accuracy": summary.get("val/accuracy"),
        "train/steps_per_s": summary["train/steps_per_s"],
        "steps": summary["steps"],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fashion_mnist_png")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--epochs", type=int, default=None, help="trainer.epochs (default: the recipe's)")
    args = parser.parse_args()
    started = time.perf_counter()
    folder = make_folder(args.folder)
    results: dict = {"write_png_s": time.perf_counter() - started, "epochs": args.epochs or "recipe"}
    work = Path(tempfile.mkdtemp(prefix="image_folder_bench_"))
    names = args.runs.split(",")
    runs = {
        name: start(name, RUNS[name], folder, work / "runs", work / "cache", args.epochs) for name in names
    }
    results["first_load_s"] = load_seconds(folder, work / "load_cache")
    results["second_load_s"] = load_seconds(folder, work / "load_cache")
    print(json.dumps(results), flush=True)
    for name in names:
        results[name] = result(name, *runs[name])
        print(name, json.dumps(results[name]), flush=True)
    accuracies = {name: results[name]["test/accuracy"] for name in names}
    if "tfds" in accuracies:
        results["gap_to_tfds"] = {k: v - accuracies["tfds"] for k, v in accuracies.items() if k != "tfds"}
    results["versions"] = {"python": sys.version.split()[0], "numpy": np.__version__}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
