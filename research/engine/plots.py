"""PNG plots: a run's learning curves from metrics.jsonl, and curves with bands across runs
(``research.compare``); evaluators draw their own images.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from research.images import pyplot

SPREAD_SUFFIX = "_std"  # the spread of replicas beside their mean: a band, never a curve of its own


def read_history(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a last line cut short by a killed run is left out."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def curve_series(history: list[dict]) -> dict[str, dict[str, tuple[list, list]]]:
    """metric -> split -> (steps, values) for the panels: the metrics recorded on more than one
    split (train and val/eval, overlaid); when no metric is, every metric.
    """
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for record in history:
        for key, value in record.items():
            if "/" not in key or not isinstance(value, (int, float)) or key.endswith(SPREAD_SUFFIX):
                continue
            split, metric = key.split("/", 1)
            xs, ys = series.setdefault(metric, {}).setdefault(split, ([], []))
            xs.append(record["step"])
            ys.append(value)
    return {m: s for m, s in series.items() if len(s) > 1} or series


def learning_curves(history: list[dict], out: Path, title: str) -> Path | None:
    """One panel per metric of ``curve_series``."""
    shared = curve_series(history)
    if not shared:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(shared), figsize=(4.5 * len(shared), 3.5), squeeze=False)
    for ax, (metric, splits) in zip(axes[0], sorted(shared.items()), strict=True):
        for split, (xs, ys) in sorted(splits.items()):
            ax.plot(xs, ys, label=split, marker="." if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@dataclass
class Band:
    """One line of a comparison: a mean per step and, when there are replicas, its interval."""

    label: str
    steps: Sequence[int]
    mean: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None


def band_curves(bands: Sequence[Band], out: Path, title: str, note: str = "") -> Path:
    """A line per band with its interval shaded; the legend beside the axes, never over the data."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for band in bands:
        (line,) = ax.plot(
            band.steps, band.mean, label=band.label, marker="." if len(band.steps) < 30 else None
        )
        if band.low is not None and band.high is not None:
            ax.fill_between(band.steps, band.low, band.high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_title(f"{title}\n{note}" if note else title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
