"""What logger=tensorboard costs a run at the default log interval (trainer.log_every).

The default experiment (``research.experiment.run`` as ``python -m research.train`` calls it;
W&B off) with ``logger=none`` and with ``logger=tensorboard``, alternating, median of the
repeats. A 2-3 s run moves by more than the logging costs, so the cost is also measured
directly, as a fraction of the training time (``train/steps_per_s``):

- ``loop_thread``: seconds the loop's thread spends in the TensorBoard writer's calls (it
  only queues the record: tens of microseconds, more when another thread holds the GIL, e.g.
  the evaluation programs compiling in the background early in the run; the median call says
  which); ``close``, once at the end, waits for the queue to be written;
- ``writer_thread``: CPU seconds of the background thread that turns records into event
  files (on a machine with a spare core it overlaps the steps; on a busy one it takes a share),
  and of that, ``records``: the records alone (the rest: the test pass's images, once);

and against the hand-written equivalent in the same process: ``SummaryWriter.add_scalar`` for
each scalar of the same records, called on the loop's thread as a training script would.

    python bench/tensorboard_overhead.py [--repeats 5] [overrides...]
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

from research.config import compose_train
from research.engine import tensorboard
from research.experiment import run

LOOP_CALLS = ("write", "images", "summary")
WORKER_CALLS = ("_record", "_images", "_final")


class Clock:
    """Seconds inside the writer's calls: wall time on the loop's thread, CPU time on its own."""

    def __init__(self) -> None:
        self.loop_s = self.writer_s = self.close_s = self.record_s = 0.0
        self.records: list[tuple[int, dict]] = []
        cls = tensorboard.TensorboardWriter
        cls.close = self._timed(cls.close, time.perf_counter, "close_s")
        self.calls: list[float] = []  # each call's seconds on the loop's thread
        for name in LOOP_CALLS:
            setattr(cls, name, self._timed(getattr(cls, name), time.perf_counter, "loop_s", self.calls))
        for name in WORKER_CALLS:
            setattr(cls, name, self._timed(getattr(cls, name), time.thread_time, "writer_s"))
        cls._record = self._timed(cls._record, time.thread_time, "record_s")
        write = cls.write

        def keep(writer, step, metrics):  # the records, for the hand-written equivalent
            self.records.append((step, dict(metrics)))
            return write(writer, step, metrics)

        cls.write = keep

    def _timed(self, method, clock, total: str, calls: list | None = None):
        def timed(*args, **kwargs):
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                seconds = clock() - start
                setattr(self, total, getattr(self, total) + seconds)
                if calls is not None:
                    calls.append(seconds)

        return timed


CLOCK = Clock()


def one_run(overrides: list[str], logger: str) -> dict:
    cfg = compose_train([f"logger={logger}", "trainer.progress=false", *overrides])
    CLOCK.loop_s = CLOCK.writer_s = CLOCK.close_s = CLOCK.record_s = 0.0
    CLOCK.records = []
    CLOCK.calls.clear()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run(cfg, Path(tmp) / "run")
        wall = time.perf_counter() - start
    train_s = summary["steps"] / summary["train/steps_per_s"]
    return {
        "wall_s": wall,
        "train_s": train_s,
        "steps": summary["steps"],
        "loop_s": CLOCK.loop_s,
        "writer_s": CLOCK.writer_s,
        "close_s": CLOCK.close_s,
        "record_s": CLOCK.record_s,
        "call_median_s": float(np.median(CLOCK.calls)) if CLOCK.calls else 0.0,
        "records": list(CLOCK.records),
    }


def nrec(row: dict) -> int:
    return max(len(row["records"]), 1)


def hand_written_s(records: list[tuple[int, dict]]) -> float:
    """The same records through ``SummaryWriter.add_scalar`` on the calling thread (a script's loop)."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp)
        start = time.perf_counter()
        for step, metrics in records:
            for key, value in metrics.items():
                if np.ndim(value) == 0:
                    writer.add_scalar(key, float(value), step)
        seconds = time.perf_counter() - start
        writer.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"# {platform.node()} | {jax.devices()[0].device_kind} | jax {jax.__version__}")
    one_run(args.overrides, "tensorboard")  # warm the compilation cache and the dataset
    rows: dict[str, list] = {"none": [], "tensorboard": []}
    for _ in range(args.repeats):
        rows["none"].append(one_run(args.overrides, "none"))
        rows["tensorboard"].append(one_run(args.overrides, "tensorboard"))
    tb = rows["tensorboard"]

    def median(of) -> float:
        return float(np.median([of(r) for r in tb]))

    wall = {k: float(np.median([r["wall_s"] for r in v])) for k, v in rows.items()}
    hand = [hand_written_s(r["records"]) for r in tb]
    cfg = compose_train(args.overrides)
    result = {
        "experiment": f"{cfg.name}, {tb[0]['steps']} steps, log_every {cfg.trainer.log_every}",
        "records_per_run": len(tb[0]["records"]),
        "scalars_per_record": int(np.median([len(m) for _, m in tb[0]["records"]])),
        "step_ms": round(1000 * median(lambda r: r["train_s"] / r["steps"]), 4),
        "run_wall_s_none": round(wall["none"], 3),
        "run_wall_s_tensorboard": round(wall["tensorboard"], 3),
        "run_wall_fraction": round(wall["tensorboard"] / wall["none"] - 1, 4),
        "loop_thread_fraction_of_train_time": round(median(lambda r: r["loop_s"] / r["train_s"]), 5),
        "writer_thread_cpu_fraction_of_train_time": round(median(lambda r: r["writer_s"] / r["train_s"]), 5),
        "writer_thread_records_fraction": round(median(lambda r: r["record_s"] / r["train_s"]), 5),
        "hand_written_add_scalar_fraction": round(
            float(np.median([h / r["train_s"] for h, r in zip(hand, tb, strict=True)])), 5
        ),
        "per_record_ms_loop_thread": round(1000 * median(lambda r: r["loop_s"] / nrec(r)), 4),
        "per_call_ms_loop_thread_median": round(1000 * median(lambda r: r["call_median_s"]), 4),
        "per_record_ms_writer_thread": round(1000 * median(lambda r: r["record_s"] / nrec(r)), 4),
        "per_record_ms_hand_written": round(
            1000 * float(np.median([h / nrec(r) for h, r in zip(hand, tb, strict=True)])), 4
        ),
        "close_wait_s_once": round(median(lambda r: r["close_s"]), 4),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
