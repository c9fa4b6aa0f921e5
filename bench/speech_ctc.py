"""Spoken digits with CTC: synthesis time, then the recipe's CER and WER on held-out voices.

    python bench/speech_ctc.py                      # synthesise into a fresh data dir, train, report
    python bench/speech_ctc.py --run runs/bench/speech_ctc_<time>   # report a run already made

The synthesis is timed in a data dir of its own (so espeak-ng really runs); the training run then
reads that cache. The process's CPU seconds are reported beside the wall time, since on a shared
machine the wall time says more about the neighbours than about the recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timed_recipe  # bench/ is on sys.path when run as a script

ROOT = timed_recipe.ROOT
RECIPE = "spoken_digits_ctc"


def synthesise(data_dir: str, overrides: list[str]) -> dict:
    """Time the recipe's synthesis alone (the data config, loaded once in a child process)."""
    code = (
        "import sys; from hydra.utils import instantiate; from research.config import compose_train\n"
        f"instantiate(compose_train(['+experiment={RECIPE}', *sys.argv[1:]]).data, _convert_='all')\n"
    )
    start, cpu = time.perf_counter(), timed_recipe.children_cpu_s()
    env = {**os.environ, "TFDS_DATA_DIR": data_dir}
    subprocess.run([sys.executable, "-c", code, *overrides], check=True, env=env, cwd=ROOT)
    return {"synth_wall_s": time.perf_counter() - start, "synth_cpu_s": timed_recipe.children_cpu_s() - cpu}


def report(run_dir: Path, timings: dict) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    keys = ("test/cer", "test/wer", "test/beam_cer", "test/beam_wer", "val/cer", "val/wer",
            "steps", "best_step", "compile_s", "wall_s", "train/steps_per_s")  # fmt: skip
    print("| " + " | ".join([*keys, *timings]) + " |")
    print("|" + "---|" * (len(keys) + len(timings)))
    values = [summary.get(k) for k in keys] + list(timings.values())
    print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="report this run directory instead of training")
    parser.add_argument("overrides", nargs="*", help="config overrides for the recipe")
    args = parser.parse_args()
    if args.run:
        report(args.run, {})
        return
    data_dir = tempfile.mkdtemp(prefix="speech_ctc_data_")
    timings = synthesise(data_dir, args.overrides)
    run_dir = ROOT / "runs" / "bench" / f"speech_ctc_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    timings |= timed_recipe.train(RECIPE, run_dir, data_dir, args.overrides)
    report(run_dir, timings)
    print(f"run: {run_dir}; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
