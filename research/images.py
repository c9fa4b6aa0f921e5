"""Images for the records: sample grids, confusion matrices, matplotlib figures as arrays."""

from __future__ import annotations

import math

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display), imported on first use; in a notebook's
    kernel its own backend stays (it renders with Agg too), or the user's figures would stop showing.
    """
    import sys

    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_array(fig) -> np.ndarray:
    """An (H, W, 4) uint8 rendering of a matplotlib figure, which is then closed."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    pyplot().close(fig)
    return image


def grid(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, H, W[, C]) images in [0, 1] tiled into one (rows*H, columns*W, C) image."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.ones((rows * (h + pad) - pad, columns * (w + pad) - pad, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        out[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = image
    return np.clip(out, 0.0, 1.0)


def confusion_matrix(matrix: np.ndarray, class_names: list[str], title: str) -> np.ndarray:
    """Counts with row-normalised colours: rows are true classes, columns predictions."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    if matrix.ndim == 3:  # several seeds: their sum
        matrix = matrix.sum(0)
    n = matrix.shape[0]
    names = class_names or [str(i) for i in range(n)]
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n), dpi=100)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            color = "white" if rows[i, j] > 0.5 else "black"
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n), names, rotation=90)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return figure_array(fig)
