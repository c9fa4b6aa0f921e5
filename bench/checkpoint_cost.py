"""What checkpointing costs a user: the default experiment with its default checkpoint
settings against the same run with checkpointing off, and its steps/s against a
hand-written one-step-per-dispatch JAX + optax loop of the same model, in one process.

Each run is ``research.experiment.run`` as ``python -m research.train`` calls it
(evaluation, best-state tracking, test evaluation and plots included; W&B off), into a
fresh run directory. Runs alternate, so a noisy machine slows both the same way; the cost is
given as the difference of the medians and as the median of each pair's difference, and, since
on a 2-3 s run both move by more than the saves cost, also measured directly: the seconds the
loop's thread spends inside the checkpointer's calls (opening the manager, queueing each save,
waiting for the writes at the end). The writes themselves run in Orbax's background threads.

    python bench/checkpoint_cost.py [--repeats 5] [overrides...]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from loop_vs_pure_jax import pure_jax_steps_per_s  # bench/ is on sys.path when run as a script

from research.config import compose_train
from research.engine import checkpoint
from research.experiment import build, run

CHECKPOINTER_CALLS = ("__init__", "save", "wait", "close")


class CheckpointerClock:
    """Seconds spent inside ``Checkpointer``'s calls (outermost only: close calls wait)."""

    def __init__(self) -> None:
        self.seconds, self._depth = 0.0, 0
        for name in CHECKPOINTER_CALLS:
            setattr(checkpoint.Checkpointer, name, self._timed(getattr(checkpoint.Checkpointer, name)))

    def _timed(self, method):
        def timed(*args, **kwargs):
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - start

        return timed


CLOCK = CheckpointerClock()


def one_run(overrides: list[str], checkpoints: bool) -> dict:
    """``wall_s``: the whole ``run`` call, up to the last checkpoint written and closed (the
    summary's own ``wall_s`` stops before the plots and the wait for the checkpoint writes).
    """
    cfg = compose_train(
        ["logger=none", "trainer.progress=false", *overrides, f"trainer.checkpoint.enabled={checkpoints}"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        CLOCK.seconds = 0.0
        start = time.perf_counter()
        summary = run(cfg, Path(tmp) / "run")
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "fit_s": summary["wall_s"],
        "steps_per_s": summary["train/steps_per_s"],
        "checkpointer_s": CLOCK.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"# {platform.node()} | {jax.devices()[0].device_kind} | jax {jax.__version__}")
    cfg = compose_train(["logger=none", *args.overrides])
    built = build(cfg)
    arrays = built.dataset.splits["train"].arrays()
    hidden, batch = list(cfg.model.hidden_sizes), int(cfg.data.batch_size)
    steps = int(cfg.trainer.epochs) * (len(arrays["label"]) // batch)
    one_run(args.overrides, True)  # warm the compilation cache and the dataset
    rows = {"default": [], "no_checkpoints": [], "pure_jax_steps_per_s": []}
    for _ in range(args.repeats):
        rows["default"].append(one_run(args.overrides, True))
        rows["no_checkpoints"].append(one_run(args.overrides, False))
        rows["pure_jax_steps_per_s"].append(
            pure_jax_steps_per_s(hidden, batch, steps, arrays["image"], arrays["label"])
        )
    wall = {k: float(np.median([r["wall_s"] for r in rows[k]])) for k in ("default", "no_checkpoints")}
    fit = {k: float(np.median([r["fit_s"] for r in rows[k]])) for k in ("default", "no_checkpoints")}
    sps = {k: float(np.median([r["steps_per_s"] for r in rows[k]])) for k in ("default", "no_checkpoints")}
    pure = float(np.median(rows["pure_jax_steps_per_s"]))
    paired = zip(rows["default"], rows["no_checkpoints"], strict=True)
    pairs = [d["wall_s"] / n["wall_s"] - 1 for d, n in paired]
    in_calls = float(np.median([r["checkpointer_s"] / r["wall_s"] for r in rows["default"]]))
    result = {
        "model": f"MLP 64-{'-'.join(map(str, hidden))}-10, batch {batch}, {steps} steps",
        "run_wall_s_default": round(wall["default"], 3),
        "run_wall_s_no_checkpoints": round(wall["no_checkpoints"], 3),
        "checkpoint_cost_fraction": round(wall["default"] / wall["no_checkpoints"] - 1, 3),
        "checkpoint_cost_fraction_median_of_pairs": round(float(np.median(pairs)), 3),
        "checkpointer_calls_fraction_of_default_run": round(in_calls, 4),
        "fit_wall_s_default_to_test_pass": round(fit["default"], 3),
        "fit_wall_s_no_checkpoints_to_test_pass": round(fit["no_checkpoints"], 3),
        "steps_per_s_default": round(sps["default"]),
        "steps_per_s_no_checkpoints": round(sps["no_checkpoints"]),
        "steps_per_s_pure_jax_one_step_per_dispatch": round(pure),
        "default_over_pure_jax": round(sps["default"] / pure, 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
