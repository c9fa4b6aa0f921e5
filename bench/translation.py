"""Number words to digits and dates: the translation recipe's exact match and BLEU, greedy beside beam.

    python bench/translation.py                               # generate, train, report
    python bench/translation.py trainer.max_steps=1000        # overrides go to the recipe
    python bench/translation.py --run runs/bench/number_words_<time>   # report a run already made

The data is generated in a data dir of its own (so num2words and babel really run), then the
recipe trains on it. The process's CPU seconds are reported beside the wall time: on a shared
machine the wall time says more about the neighbours than about the recipe.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import timed_recipe  # bench/ is on sys.path when run as a script

ROOT = timed_recipe.ROOT
RECIPE = "number_words_transformer"
DECODED = ("greedy_exact_match", "beam_exact_match", "greedy_bleu", "beam_bleu")


def report(run_dir: Path, timings: dict) -> None:
    """The test split's figures, then val's at every evaluation."""
    summary = json.loads((run_dir / "summary.json").read_text())
    print("| split | " + " | ".join(DECODED) + " |")
    print("|---|" + "---|" * len(DECODED))
    print("| test | " + " | ".join(f"{summary[f'test/{k}']:.4g}" for k in DECODED) + " |")
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if f"val/{DECODED[0]}" in record:
            row = " | ".join(f"{record[f'val/{k}']:.4g}" for k in DECODED)
            print(f"| val, step {record['step']} | {row} |")
    keys = ("steps", "compile_s", "wall_s", "train/steps_per_s")
    print(", ".join(f"{k} {summary.get(k):.4g}" for k in keys if summary.get(k) is not None))
    print(", ".join(f"{k} {v:.4g}" for k, v in timings.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="report this run directory instead of training one")
    args, overrides = parser.parse_known_args()
    if args.run:
        report(args.run, {})
        return
    run_dir = ROOT / "runs" / "bench" / f"number_words_{time.strftime('%Y%m%d_%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="number_words_data_") as data_dir:
        report(run_dir, timed_recipe.train(RECIPE, run_dir, data_dir, overrides))


if __name__ == "__main__":
    main()
