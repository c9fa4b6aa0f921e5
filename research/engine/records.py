"""What the loop records about training: windowed means, counters, non-finite checks, plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from research.engine import plots
from research.errors import NonFiniteLossError


class TrainWindow:
    """Train metrics of the calls since the last record; counters (env steps) summed for good."""

    def __init__(self, counters: tuple[str, ...]):
        self.counters = tuple(counters)
        self.chunks: dict[str, list] = {}
        self.totals = {c: 0.0 for c in self.counters}
        self.last: dict[str, float] = {}

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

    def postfix(self, steps_per_s: float) -> dict[str, str]:
        shown = {k: f"{v:.4f}" for k, v in list(self.last.items())[:2]}
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
