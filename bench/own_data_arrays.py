"""data=arrays against the built-in digits: the default experiment's splits written to one .npz.

    JAX_PLATFORMS=cpu python bench/own_data_arrays.py [--seeds 5]

Results: docs/benchmarks.md, "Your own data". The built-in digits (TFDS build of scikit-learn's
digits, val carved by split_seed 0) are read once and written as digits.npz in Keras' layout
(image_train, label_train, image_val, ... : the user's own splits); the default experiment then
trains on data=digits and on data=arrays data.path=digits.npz, each one `python -m research.train`
process training `--seeds` seeds as replicas. The acceptance: the test accuracies agree within 0.01.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from own_data_table import ROOT, train

from research.data.tfds_source import load as load_tfds

SPLITS = ("train", "val", "test")


def write_digits(path: Path) -> None:
    config = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/digits.yaml"), resolve=True)
    config["data_dir"] = os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    digits = load_tfds(**{k: v for k, v in config.items() if k != "_target_"})
    arrays = {s: digits.splits[s].arrays() for s in SPLITS}
    np.savez(path, **{f"{k}_{s}": v for s in SPLITS for k, v in arrays[s].items()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    seeds = f"trainer.num_seeds={args.seeds}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_digits(folder / "digits.npz")
        print(f"| data | {args.seeds} seeds: test/accuracy mean (std) | seconds |\n|---|---|---|")
        results = {}
        for name, overrides in (
            ("digits built-in", ()),
            ("digits.npz (data=arrays)", ("data=arrays", f"data.path={folder / 'digits.npz'}")),
        ):
            summary, seconds = train(
                folder / name.split()[0].replace(".", "_") / str(len(results)), *overrides, seeds
            )
            results[name] = summary["test/accuracy"]
            print(
                f"| {name} | {summary['test/accuracy']:.4f} "
                f"({summary.get('test/accuracy_std', 0.0):.4f}) | {seconds:.0f} |",
                flush=True,
            )
        first, second = results.values()
        print(f"\ndifference {abs(first - second):.4f} (acceptance: within 0.01)")


if __name__ == "__main__":
    main()
