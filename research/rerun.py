"""Running into an existing run directory: finished, continuing, or not fitting.

Checked in preflight, before Hydra touches the directory, so every file of a saved
run stays as it was when the answer is "finished" or "does not fit". A change that
keeps the state's structure (more epochs, another learning rate) continues and says so.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from research import ema
from research.engine.checkpoint import STATE
from research.engine.orbax_reads import shape_mismatches
from research.engine.settings import TrainerConfig
from research.errors import CheckpointUnreadable, ConfigError

IGNORED = ("hydra",)  # keys whose differences never matter for a rerun


class Finished(Exception):
    """The run in this directory is complete for this config; ``summary`` is its summary.json."""

    def __init__(self, run_dir: Path, summary: dict, changes: list[str]):
        ignored = f" (the changed settings are not applied: {'; '.join(changes)})" if changes else ""
        super().__init__(f"{run_dir} is finished (step {summary.get('steps')}); nothing to do{ignored}")
        self.summary = summary


def checkpoint_steps(run_dir: Path) -> list[int]:
    ckpts = run_dir / "checkpoints"
    if not ckpts.is_dir():
        return []
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit() and (p / STATE).is_dir())


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs (added and removed keys too)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        if not prefix and key in IGNORED:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def with_setting_defaults(saved: dict) -> dict:
    """``saved`` with every trainer setting it lacks at its default, and every weight average's
    (an ``ema`` mapping anywhere: the optimizer's, a GAN's generator's): a run saved before a
    setting existed ran as that default does, so resuming it with this version is no change."""
    saved = _averages_filled(saved)
    trainer = saved.get("trainer")
    if not isinstance(trainer, dict):
        return saved
    return {**saved, "trainer": _filled(trainer, dataclasses.asdict(TrainerConfig()))}


def _averages_filled(tree: Any) -> Any:
    if not isinstance(tree, dict):
        return tree
    out = {k: _averages_filled(v) for k, v in tree.items()}
    if isinstance(out.get("ema"), dict):
        out["ema"] = _filled(out["ema"], ema.DEFAULTS)
    return out


def _filled(saved: dict, defaults: dict) -> dict:
    out = dict(saved)
    for key, default in defaults.items():
        if key not in out:
            out[key] = default
        elif isinstance(out[key], dict) and isinstance(default, dict):
            out[key] = _filled(out[key], default)
    return out


def saved_config(run_dir: Path) -> dict | None:
    """The config the run was started with (Hydra's copy), as a plain dict."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return None
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is the same damaged file to the user
        raise ConfigError(
            f"{path} cannot be read ({type(e).__name__}): the run's config is damaged"
        ) from None


def check(run_dir: Path, config: dict, abstract_state: Any, total_steps: int) -> list[str]:
    """Raise Finished or ConfigError for ``run_dir``; otherwise the changes a resumed run continues with."""
    steps = checkpoint_steps(run_dir)
    summary = _summary(run_dir)
    if not steps:
        if summary is not None:  # training again would overwrite it and log every step twice
            raise ConfigError(
                f"{run_dir} holds a finished run's summary.json but no checkpoints/ to continue from: "
                "start a new run with hydra.run.dir=<new dir>, or trainer.resume=false to set it aside"
            )
        return []
    old = saved_config(run_dir) or {}
    changes = config_changes(with_setting_defaults(old), config) if old else []
    if abstract_state is not None:
        mismatched = _mismatches(run_dir, steps, abstract_state)
        if mismatched:
            differ = "; ".join(changes[:8]) or "; ".join(mismatched[:4])
            raise ConfigError(
                f"{run_dir} holds a run whose checkpoint does not fit this config ({differ}): start a new "
                f"run with trainer.resume=false hydra.run.dir=<new dir>, or rerun with the original values"
            )
    if summary is not None:
        done = summary.get("stopped_early") or int(summary.get("steps", 0)) >= total_steps
        # Cross-validation with cv_refit: the folds may be done while the run on the whole split is not.
        refit = (config.get("trainer") or {}).get("cv_refit")
        if done and not (refit and not (run_dir / "refit" / "summary.json").exists()):
            raise Finished(run_dir, summary, changes)
    return changes


def _summary(run_dir: Path) -> dict | None:
    """The run's summary.json, None when there is none; a damaged one is one line naming it."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({type(e).__name__}): move it aside to continue") from None


def _mismatches(run_dir: Path, steps: list[int], abstract: Any) -> list[str]:
    """What does not fit, or nothing when some checkpoint fits: a damaged newest one is for the
    resume to move aside, not a reason to refuse the run. When none can be read, that is the error:
    the run cannot continue, yet nothing says its config changed.
    """
    first, unreadable = None, None
    for step in reversed(steps):
        try:
            mismatched = shape_mismatches(run_dir / "checkpoints" / str(step) / STATE, abstract)
        except CheckpointUnreadable as e:
            unreadable = unreadable or e
            continue
        if not mismatched:
            return []
        first = first or mismatched
    if first is None and unreadable is not None:
        raise CheckpointUnreadable(
            f"{unreadable}, and {run_dir} has no other checkpoint that can be read: start over with "
            "trainer.resume=false (the earlier run's files are moved to replaced/)"
        )
    return first or []


class Attempt:
    """One training attempt in a run directory: it holds the directory's lock while it trains, and
    when it fails before saving a checkpoint of its own (a continuation that met a NaN at its new
    learning rate, a full disk), it puts back the config that the run's checkpoints were made with.

    Made before Hydra writes ``.hydra/config.yaml`` (in the CLI's preflight), so it can keep it.
    """

    def __init__(self, run_dir: Path):
        from research.engine.run_dir import RunLock

        self.run_dir, self.lock = Path(run_dir), RunLock(run_dir)
        self.config_path = self.run_dir / ".hydra" / "config.yaml"
        self.config = self.config_path.read_bytes() if self.config_path.exists() else None
        self.steps = checkpoint_steps(self.run_dir)

    def start(self) -> None:
        """Take the directory's lock (one line naming its holder if another process trains there)."""
        self.lock.acquire()

    def end(self, succeeded: bool) -> None:
        if not succeeded and self.config is not None and checkpoint_steps(self.run_dir) == self.steps:
            self.config_path.write_bytes(self.config)
        self.lock.release()

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: type | None, *_: Any) -> None:
        """Ends the attempt, as failed when an exception (an interrupt included) leaves the block."""
        self.end(succeeded=kind is None)
