"""The tf.data arm of bench/image_folder_throughput.py: one epoch of a folder's PNG files through
the usual tf.data pipeline (decode, resize, random crop and flip, batch, prefetch), in images/s.

Runs in an interpreter with TensorFlow, which the project does not install (its ``prepare`` extra
names tensorflow-cpu); the throughput bench calls it with ``--tf-python``:

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    /tmp/tfvenv/bin/python bench/image_folder_tfdata.py --folder DIR/test --size 32 --batch 128 [--augment]

Prints one JSON object. Same files, size and batch as the other arms; tf.data's own parallelism
(AUTOTUNE) over the process's threads stands in for grain's worker processes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PAD = 4  # the crop's padding, as the plain grain arm's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--augment", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    paths = sorted(str(p) for p in args.folder.glob("*/*.png"))
    size = args.size

    def decode(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_png(tf.io.read_file(path), channels=1)
        return tf.image.resize(image, (size, size), method="bilinear")

    def augment(image: tf.Tensor) -> tf.Tensor:
        image = tf.image.resize_with_crop_or_pad(image, size + 2 * PAD, size + 2 * PAD)
        return tf.image.random_flip_left_right(tf.image.random_crop(image, (size, size, 1)))

    started = time.perf_counter()
    dataset = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths), seed=0)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if args.augment:
        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    count = sum(int(batch.shape[0]) for batch in dataset.as_numpy_iterator())
    seconds = time.perf_counter() - started
    print(
        json.dumps({"tf_version": tf.__version__, "images": count, "images_per_s": round(count / seconds, 1)})
    )


if __name__ == "__main__":
    main()
