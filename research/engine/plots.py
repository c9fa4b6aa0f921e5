"""PNG plots of a run: learning curves from metrics.jsonl and the confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def learning_curves(history: list[dict], out: Path, title: str) -> Path | None:
    """One panel per metric name (loss, accuracy, return...), train and val/eval overlaid."""
    series: dict[str, dict[str, tuple[list, list]]] = {}
    for record in history:
        for key, value in record.items():
            if "/" not in key or not isinstance(value, (int, float)):
                continue
            split, metric = key.split("/", 1)
            xs, ys = series.setdefault(metric, {}).setdefault(split, ([], []))
            xs.append(record["step"])
            ys.append(value)
    shared = {m: s for m, s in series.items() if m in ("loss", "accuracy", "return", "f1")} or series
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


def confusion_matrix(matrix: np.ndarray, class_names: list[str], out: Path, title: str) -> Path:
    """Counts with row-normalised colours: rows are true classes, columns predictions."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    if matrix.ndim == 3:  # several seeds: their sum
        matrix = matrix.sum(0)
    n = matrix.shape[0]
    names = class_names or [str(i) for i in range(n)]
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                int(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rows[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), names, rotation=90)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
