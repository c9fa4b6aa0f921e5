"""Where metrics go: a local JSONL record that never depends on the network, W&B, and
TensorBoard event files (``tensorboard.py``), each fed the same records.

Only process 0 writes. ``metrics.jsonl`` is line-buffered, so a killed run keeps
every line it logged; on resume the lines past the restored step are dropped so
no step is recorded twice.
"""

from __future__ import annotations

import functools
import http.client
import json
import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from research.engine.tensorboard import TensorboardWriter
from research.errors import UserError


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


# How long the start of a run waits for the W&B server to answer. wandb.init itself retries an
# unreachable server for its init_timeout (90 s) and then fails with a traceback.
WANDB_PROBE_S = 5.0


def check_wandb(settings: Mapping[str, Any] | None) -> None:
    """Decide the W&B mode of ``logger.wandb`` settings before anything is created.

    The preflight calls this so that a run that cannot log (``online`` without a login or a
    server) stops with one line before Hydra makes its run directory; the decision is cached,
    so ``WandbWriter`` reuses it without a second probe or a second notice.
    """
    if settings:
        _wandb_mode(settings.get("mode", "auto"))


def _wandb_mode(mode: str) -> str:
    """The mode for wandb.init. ``auto`` (or ``WANDB_MODE``): online when logged in (an API key,
    an identity token, a netrc entry for the server) and the server answers, offline otherwise.
    ``online`` without a login, or with a server that does not answer, is a UserError.
    """
    requested, source = (
        (mode, "logger.wandb.mode") if mode != "auto" else (os.environ.get("WANDB_MODE"), "WANDB_MODE")
    )
    if requested and requested != "online":
        return requested
    from wandb.sdk import wandb_setup

    base_url = wandb_setup.singleton().settings.base_url
    return _online_or_offline(f"{source}=online" if requested else None, base_url, _logged_in(base_url))


@functools.cache
def _online_or_offline(demand: str | None, base_url: str, logged_in: bool) -> str:
    """``demand`` (e.g. "WANDB_MODE=online") refuses to fall back; cached: one probe, one notice."""
    if not logged_in:
        if demand:
            raise UserError(f"{demand} needs a W&B login: set WANDB_API_KEY or run `wandb login`")
        return "offline"
    problem = _unreachable(base_url, WANDB_PROBE_S)
    if problem is None:
        return "online"
    if demand:
        raise UserError(f"{demand}, but the W&B server {base_url} cannot be reached ({problem})")
    print(
        f"W&B server {base_url} cannot be reached ({problem}): logging offline "
        "(`wandb sync <run dir>/wandb/offline-run-*` uploads it later)",
        flush=True,
    )
    return "offline"


def _logged_in(base_url: str) -> bool:
    from wandb.sdk.lib.wbauth import read_netrc_auth

    env = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")
    return any(os.environ.get(name) for name in env) or read_netrc_auth(host=base_url) is not None


def _unreachable(url: str, timeout_s: float) -> str | None:
    """Why ``url`` gives no HTTP answer within ``timeout_s`` (an error status is an answer), or None.

    The request runs in a daemon thread because the socket timeout does not bound name resolution.
    """
    problems, done = [f"no answer within {timeout_s:g} s"], threading.Event()

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
            problems.clear()
        except urllib.error.HTTPError:
            problems.clear()
        except urllib.error.URLError as e:
            problems[:] = [str(e.reason)]
        except (OSError, ValueError, http.client.HTTPException) as e:  # a timeout, a bad URL, not HTTP
            problems[:] = [str(e) or type(e).__name__]
        finally:
            done.set()

    threading.Thread(target=probe, daemon=True).start()
    done.wait(timeout_s)
    return problems[0] if problems else None


class WandbWriter:
    """A W&B run in the run directory; resumes the run whose id the checkpoint saved."""

    def __init__(
        self, settings: dict, run_dir: Path, name: str, config: dict, tags: list, run_id: str | None
    ):
        import wandb

        self._wandb = wandb
        mode = _wandb_mode(settings.get("mode", "auto"))
        try:
            self.run = wandb.init(
                project=settings["project"],
                entity=settings.get("entity"),
                group=settings.get("group"),
                job_type=settings.get("job_type"),
                name=name,
                tags=list(tags),
                config=config,
                dir=str(run_dir),
                mode=mode,
                id=run_id,
                resume="allow" if run_id else None,
                settings=wandb.Settings(console="off", silent=True),
            )
        except wandb.errors.Error as e:  # the server answered but refused: a wrong key, a missing project
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"W&B did not start the run ({reason}): check WANDB_API_KEY or `wandb login`, "
                "or log offline with logger.wandb.mode=offline"
            ) from None
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
    """Fan-out to the JSONL record and, when configured, W&B and TensorBoard. A no-op on
    processes other than 0.
    """

    def __init__(
        self,
        run_dir: Path,
        active: bool,
        resume_step: int | None,
        wandb: WandbWriter | None,
        tensorboard: TensorboardWriter | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.active = active
        if active:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = JsonlWriter(self.run_dir / "metrics.jsonl", resume_step) if active else None
        self.wandb = wandb if active else None
        self.tensorboard = tensorboard if active else None
        self.history: list[dict] = []

    def write(self, step: int, metrics: dict) -> None:
        if not self.active:
            return
        self.history.append({"step": step, **metrics})
        self.jsonl.write(step, metrics)
        if self.wandb:
            self.wandb.write(step, metrics)
        if self.tensorboard:
            self.tensorboard.write(step, metrics)

    def images(self, step: int, images: dict[str, np.ndarray], final: bool) -> dict[str, Path]:
        """PNGs in plots/, W&B and TensorBoard. ``<prefix>/<name>`` is ``plots/<name>.png`` at the end of the
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
        if self.tensorboard:
            self.tensorboard.images(step, images)
        return paths

    def summary(self, summary: dict, images: dict[str, Path]) -> None:
        if not self.active:
            return
        write_summary(self.run_dir, summary)
        if self.wandb:
            self.wandb.summary(summary, images)
        if self.tensorboard and "steps" in summary:
            self.tensorboard.summary(int(summary["steps"]), summary)

    def pruned(self, reason: str, steps: int, metrics: dict) -> None:
        """A sweeper pruned the run: its summary says so, its W&B run is tagged, and the records close."""
        self.summary({"pruned": True, "reason": reason, "steps": steps, **metrics}, {})
        if self.wandb:
            self.wandb.run.tags = (*self.wandb.run.tags, "pruned")
        self.close()

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.wandb:
            self.wandb.close()
        if self.tensorboard:
            self.tensorboard.close()
