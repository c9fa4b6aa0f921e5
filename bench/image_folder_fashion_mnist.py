"""Fashion-MNIST as a folder of PNG files: data=image_folder against the same recipe on TFDS data.

    python bench/image_folder_fashion_mnist.py [--folder DIR] [--out FILE] [--runs tfds,memory,streamed]

Writes the 70,000 images of Debian's dataset-fashion-mnist IDX files (research/data/fashion_mnist.py)
as ``DIR/{train,test}/<class>/<index>.png`` (the user's own test split; val carved from train, as
TFDS's recipe carves it), then trains ``+experiment=fashion_mnist_cnn`` three times: on the TFDS
build of the IDX files, on the folder in memory, and on the folder streamed (``data.in_memory=false``).
It reports each run's test accuracy, steps/s and wall time, and how long the folder's first and
second loads take (decoding once, then reading the cache).
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


def train(name: str, overrides: list[str], folder: Path, runs_dir: Path, cache_dir: Path) -> dict:
    run_dir = runs_dir / name
    data = [f"data.path={folder}", f"data.cache_dir={cache_dir}"] if overrides else []
    cmd = [
        sys.executable, "-m", "research.train", "+experiment=fashion_mnist_cnn", *overrides, *data,
        "logger=none", "trainer.progress=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
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
    args = parser.parse_args()
    started = time.perf_counter()
    folder = make_folder(args.folder)
    results: dict = {"write_png_s": time.perf_counter() - started}
    work = Path(tempfile.mkdtemp(prefix="image_folder_bench_"))
    cache_dir = work / "cache"
    results["first_load_s"] = load_seconds(folder, cache_dir)
    results["second_load_s"] = load_seconds(folder, cache_dir)
    print(json.dumps(results), flush=True)
    for name in args.runs.split(","):
        results[name] = train(name, RUNS[name], folder, work / "runs", cache_dir)
        print(name, json.dumps(results[name]), flush=True)
    accuracies = {name: results[name]["test/accuracy"] for name in args.runs.split(",")}
    if "tfds" in accuracies:
        results["gap_to_tfds"] = {k: v - accuracies["tfds"] for k, v in accuracies.items() if k != "tfds"}
    results["versions"] = {"python": sys.version.split()[0], "numpy": np.__version__}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
