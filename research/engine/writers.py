"""Where metrics go: a local JSONL record that never depends on the network, and W&B.

Only process 0 writes. ``metrics.jsonl`` is line-buffered, so a killed run keeps
every line it logged; on resume the lines past the restored step are dropped so
no step is recorded twice.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    """JSON-friendly scalars and lists (NaN/Inf become strings so the file stays valid JSON)."""
    value = np.asarray(value)
    if value.ndim == 0:
        x = value.item()
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        return x
    return [_plain(v) for v in value]


def save_png(path: Path, image: np.ndarray) -> None:
    """(H, W[, C]) floats in [0, 1] or uint8 as a PNG."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    Image.fromarray(image).save(path)


def write_summary(run_dir: Path, summary: dict) -> None:
    """``summary.json``: what ``research.compare`` and a rerun read of a finished run."""
    (Path(run_dir) / "summary.json").write_text(
        json.dumps({k: _plain(v) for k, v in summary.items()}, indent=2) + "\n"
    )


class JsonlWriter:
    def __init__(self, path: Path, resume_step: int | None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            keep = [line for line in self.path.read_text().splitlines() if _step(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in keep))
        self._file = open(self.path, "a", buffering=1)

    def write(self, step: int, metrics: dict) -> None:
        self._file.write(json.dumps({"step": step, **{k: _plain(v) for k, v in metrics.items()}}) + "\n")

    def close(self) -> None:
        self._file.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def _wandb_mode(mode: str) -> str:
    """auto: online when an API key or netrc login exists, otherwise offline."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    logged_in = os.environ.get("WANDB_API_KEY") or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    return "online" if logged_in else "offline"


class WandbWriter:
    """A W&B run in the run directory; resumes the run whose id the checkpoint saved."""

    def __init__(
        self, settings: dict, run_dir: Path, name: str, config: dict, tags: list, run_id: str | None
    ):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=settings["project"],
            entity=settings.get("entity"),
            group=settings.get("group"),
            job_type=settings.get("job_type"),
            name=name,
            tags=list(tags),
            config=config,
            dir=str(run_dir),
            mode=_wandb_mode(settings.get("mode", "auto")),
            id=run_id,
            resume="allow" if run_id else None,
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run_id = self.run.id

    def write(self, step: int, metrics: dict) -> None:
        if step < self.run.step:  # already logged before a preemption: do not log it twice
            return
        self.run.log({k: _plain(v) for k, v in metrics.items() if np.ndim(v) == 0}, step=step)

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        self.run.log({k: self._wandb.Image(v) for k, v in images.items()}, step=max(step, self.run.step))

    def summary(self, summary: dict, images: dict[str, Path]) -> None:
        self.run.summary.update({k: v for k, v in summary.items() if np.ndim(v) == 0})
        if images:
            self.run.log({k: self._wandb.Image(str(p)) for k, p in images.items()}, step=self.run.step)

    def close(self) -> None:
        self.run.finish()


class Writers:
    """Fan-out to the JSONL record and, when configured, W&B. A no-op on processes other than 0."""

    def __init__(self, run_dir: Path, active: bool, resume_step: int | None, wandb: WandbWriter | None):
        self.run_dir = Path(run_dir)
        self.active = active
        if active:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = JsonlWriter(self.run_dir / "metrics.jsonl", resume_step) if active else None
        self.wandb = wandb if active else None
        self.history: list[dict] = []

    def write(self, step: int, metrics: dict) -> None:
        if not self.active:
            return
        self.history.append({"step": step, **metrics})
        self.jsonl.write(step, metrics)
        if self.wandb:
            self.wandb.write(step, metrics)

    def images(self, step: int, images: dict[str, np.ndarray], final: bool) -> dict[str, Path]:
        """PNGs in plots/ and W&B. ``<prefix>/<name>`` is ``plots/<name>.png`` at the end of the
        run, and ``plots/<prefix>_<name>/<step>.png`` at each evaluation during training.
        """
        if not self.active or not images:
            return {}
        paths = {}
        for key, image in images.items():
            name = key.rsplit("/", 1)[-1] + ".png" if final else f"{key.replace('/', '_')}/{step:08d}.png"
            path = self.run_dir / "plots" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            save_png(path, image)
            paths[key] = path
        if self.wandb:
            self.wandb.images(step, images)
        return paths

    def summary(self, summary: dict, images: dict[str, Path]) -> None:
        if not self.active:
            return
        write_summary(self.run_dir, summary)
        if self.wandb:
            self.wandb.summary(summary, images)

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.wandb:
            self.wandb.close()
