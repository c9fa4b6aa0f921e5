"""What the loop records about training: windowed means, counters, non-finite checks, plots."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from research.engine import plots
from research.errors import NonFiniteLossError

VAL_PREFIX = "val/"


class TrainWindow:
    """Train metrics of the calls since the last record; counters (env steps) summed for good;
    the latest value of the validation metric ``watch`` for the progress display.
    """

    def __init__(self, counters: tuple[str, ...], watch: str | None = None):
        self.counters = tuple(counters)
        self.chunks: dict[str, list] = {}
        self.totals = {c: 0.0 for c in self.counters}
        self.last: dict[str, float] = {}
        self.watch = watch
        self.watched: dict[str, float] = {}

    def add(self, metrics: dict, n: int) -> None:
        for k, v in metrics.items():
            if k in self.totals:
                self.totals[k] += float(np.sum(v))
                continue
            values = np.asarray(v).reshape(n, -1)
            self.chunks.setdefault(k, []).append(values)
            self.last[k] = float(values.mean())

    def means(self) -> dict:
        """``train/<name>`` means over the window (per seed too), and a fresh window."""
        out = {}
        for k, chunks in self.chunks.items():
            per_seed = np.concatenate(chunks).mean(0)  # (seeds or 1,)
            out[f"train/{k}"] = float(per_seed.mean())
            if per_seed.size > 1:
                out[f"train/{k}_per_seed"] = per_seed.tolist()
        self.chunks = {}
        return out

    def rates(self, seconds: float) -> dict:
        return {f"{c}_per_s": total / max(seconds, 1e-9) for c, total in self.totals.items()}

    def evaluated(self, scalars: dict) -> None:
        """Keep the watched metric of an evaluation: ``watch`` (the run's metric) when it is
        among ``scalars``, else the first ``val/`` one (an evaluator that is not always due).
        """
        if self.watch in scalars:
            key = self.watch
        elif self.watch in self.watched:  # the run's metric stays until its evaluator runs again
            return
        else:
            key = next(iter(self.watched), None)
            if key not in scalars:
                named = (k for k in scalars if k.startswith(VAL_PREFIX) and np.ndim(scalars[k]) == 0)
                key = next(named, None)
        if key is not None:
            self.watched = {key: float(scalars[key])}

    def postfix(self, steps_per_s: float) -> dict[str, str]:
        shown = {k: f"{v:.4f}" for k, v in list(self.last.items())[:2]}
        shown |= {k: f"{v:.4f}" for k, v in self.watched.items()}
        return {**shown, "steps_per_s": f"{steps_per_s:.0f}"}


def check_finite(
    metrics: dict, names: tuple[str, ...], step: int, ckpt: Any, blame: Callable[[], str] | None = None
) -> None:
    """Stop with the step, the value and the last good checkpoint when a watched metric is NaN/Inf;
    ``blame()`` adds where the gradients first went non-finite (engine/health.py)."""
    for name in names:
        if name not in metrics:
            continue
        values = np.asarray(metrics[name])
        values = values.reshape(len(values), -1)
        bad = ~np.isfinite(values).all(axis=1)
        if not bad.any():
            continue
        at = step + int(np.argmax(bad)) + 1
        kept = ""
        if ckpt is not None:
            last = ckpt.last_good_step()
            kept = (
                f"; the last good checkpoint (step {last}) is kept"
                if last is not None
                else "; no checkpoint yet"
            )
        raise NonFiniteLossError(
            f"{name} became {values[bad][0][0]} at step {at}{kept}{blame() if blame else ''}: "
            "lower optimizer.learning_rate "
            "or set optimizer.clip_norm"
        )


def write_plots(run_dir: Path, name: str) -> dict[str, Path]:
    """Learning curves from the run's metrics.jsonl."""
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    history = plots.read_history(run_dir / "metrics.jsonl")
    curves = plots.learning_curves(history, out_dir / "learning_curves.png", name)
    return {"plots/learning_curves": curves} if curves else {}


class CurveRefresh:
    """The learning curves redrawn during training, at an evaluation once ``every_s`` seconds
    have passed since the run started or they were last drawn (0: at every evaluation), so a
    run can be watched in plots/ while a fast one does not spend its time drawing.
    """

    def __init__(self, run_dir: Path, name: str, every_s: float, enabled: bool):
        self.run_dir, self.name, self.every_s, self.enabled = run_dir, name, every_s, enabled
        self.last = time.perf_counter()

    def after_evaluation(self) -> None:
        if self.enabled and time.perf_counter() - self.last >= self.every_s:
            write_plots(self.run_dir, self.name)
            self.last = time.perf_counter()
