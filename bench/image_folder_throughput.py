"""Images/s of data=image_folder's pipeline against a plain grain pipeline and a plain PIL loop, and
steps/s of fashion_mnist_cnn streamed against in memory.

    python bench/image_folder_throughput.py [--folder DIR] [--workers 2] [--steps 300] [--out results.json]
        [--tf-python /tmp/tfvenv/bin/python]

``DIR`` is the PNG folder bench/image_folder_fashion_mnist.py writes; its 10,000 test images
are read here, resized from 28x28 to 32x32 (so every pipeline decodes and resizes). Measured:

- framework, first read: decode + resize in ``--workers`` grain processes into the ArrayRecord
  cache (what a first run pays once);
- framework, streamed: batches of 128 from that cache through the train split's grain iterator
  (what every epoch of a streamed run pays; augmentation then runs on device, in the step);
- plain grain: ``MapDataset`` of the files -> decode + resize (+ a numpy random crop and flip,
  the usual worker-side augmentation) -> batch, ``mp_prefetch`` with the same workers: one epoch,
  the workers' start included, as the framework's first read includes it (every epoch pays it);
- plain PIL: a loop in one process, decode + resize.

- tf.data (with ``--tf-python``, an interpreter that has TensorFlow: the project does not install
  it): the same decode + resize (+ crop and flip) through ``bench/image_folder_tfdata.py``.

Training: ``--steps`` steps of fashion_mnist_cnn on the
folder in memory and streamed, alternated twice, best of each (the machine is shared).
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

from research.data import file_index, image_cache  # noqa: E402
from research.data.image_folder import StreamedSplit  # noqa: E402

SIZE = (32, 32)
BATCH = 128


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


class DecodeAugment:
    """The plain pipeline's worker function: decode, resize, random 4-pixel crop and flip (numpy)."""

    def __init__(self) -> None:
        self.decode = image_cache.Decode(image_cache.Decoding(SIZE, 1, "bilinear"))

    def __call__(self, path: str, rng: np.random.Generator) -> np.ndarray:
        image = self.decode(path)["image"]
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
        top, left = rng.integers(0, 9, 2)
        image = padded[top : top + SIZE[0], left : left + SIZE[1]]
        return image[:, ::-1] if rng.random() < 0.5 else image


class DecodeOnly:
    def __init__(self) -> None:
        self.decode = image_cache.Decode(image_cache.Decoding(SIZE, 1, "bilinear"))

    def __call__(self, path: str) -> np.ndarray:
        return self.decode(path)["image"]


def plain_grain(paths: list[str], workers: int, augment: bool) -> float:
    import grain

    image_cache.absl_flags_parsed()
    dataset = grain.MapDataset.source(paths).shuffle(0)
    dataset = dataset.random_map(DecodeAugment(), seed=0) if augment else dataset.map(DecodeOnly())
    dataset = dataset.batch(BATCH, drop_remainder=True).to_iter_dataset()
    if workers:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    started, count = time.perf_counter(), 0  # one epoch, as a run sees it: the workers' start included
    iterator = iter(dataset)
    for batch in iterator:
        count += len(batch)
    iterator.close()
    return rate(count, time.perf_counter() - started)


def plain_pil(paths: list[str]) -> float:
    decode = DecodeOnly()
    started = time.perf_counter()
    for path in paths:
        decode(path)
    return rate(len(paths), time.perf_counter() - started)


def tf_data(python: str, folder: Path, augment: bool) -> float:
    cmd = [python, str(ROOT / "bench" / "image_folder_tfdata.py"), "--folder", str(folder)]
    cmd += ["--size", str(SIZE[0]), "--batch", str(BATCH)] + (["--augment"] if augment else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def framework(files: file_index.Files, root: str, workers: int) -> dict:
    cache = tempfile.mkdtemp(prefix="image_folder_throughput_")
    decoding = image_cache.Decoding(SIZE, 1, "bilinear")
    started = time.perf_counter()
    part = image_cache.part(files, root, "test", decoding, cache, workers)
    first = rate(len(files), time.perf_counter() - started)
    split = StreamedSplit(part, len(part), (0, 1))
    iterator = split.iterator(BATCH, 0, 0, 1)
    next(iterator)
    started, count = time.perf_counter(), 0
    for _ in range(2 * len(part) // BATCH):  # two epochs
        count += len(next(iterator)["label"])
    return {"first_read": first, "streamed": rate(count, time.perf_counter() - started)}


def train_rate(folder: Path, in_memory: bool, steps: int, cache: Path) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [
            sys.executable, "-m", "research.train", "+experiment=fashion_mnist_cnn", "data=image_folder",
            f"data.path={folder}", f"data.cache_dir={cache}", f"data.in_memory={str(in_memory).lower()}",
            f"trainer.max_steps={steps}", f"trainer.eval_every={steps}", "trainer.checkpoint.enabled=false",
            "trainer.plots=false", "logger=none", "trainer.progress=false", f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        return json.loads((Path(run_dir) / "summary.json").read_text())["train/steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fashion_mnist_png")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tf-python", default=None, help="an interpreter with TensorFlow: adds tf.data")
    args = parser.parse_args()
    test = file_index.scan(str(args.folder / "test"))[1]["all"]
    paths = list(test.paths)
    results: dict = {"images": len(paths), "size": list(SIZE), "workers": args.workers, "batch": BATCH}
    results["framework"] = framework(test, str(args.folder / "test"), args.workers)
    results["plain_grain"] = plain_grain(paths, args.workers, augment=False)
    results["plain_grain_augment"] = plain_grain(paths, args.workers, augment=True)
    results["plain_pil_loop"] = plain_pil(paths)
    if args.tf_python:
        results["tf_data"] = tf_data(args.tf_python, args.folder / "test", augment=False)
        results["tf_data_augment"] = tf_data(args.tf_python, args.folder / "test", augment=True)
        results["streamed_over_tf_data"] = round(
            results["framework"]["streamed"] / results["tf_data_augment"], 2
        )
    results["streamed_over_plain_grain"] = round(
        results["framework"]["streamed"] / results["plain_grain_augment"], 2
    )
    results["first_read_over_plain_grain"] = round(
        results["framework"]["first_read"] / results["plain_grain"], 2
    )
    print(json.dumps(results), flush=True)
    if args.steps:
        cache = Path(tempfile.mkdtemp(prefix="image_folder_train_"))
        memory, streamed = [], []
        for _ in range(2):
            memory.append(train_rate(args.folder, True, args.steps, cache))
            streamed.append(train_rate(args.folder, False, args.steps, cache))
        results["steps_per_s"] = {"in_memory": memory, "streamed": streamed}
        results["streamed_over_in_memory"] = round(max(streamed) / max(memory), 2)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
