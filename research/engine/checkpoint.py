"""Orbax checkpoints: the train state, the loop's metadata and the data iterator.

Keeps the latest checkpoint and the best k by a validation metric. The retention is
decided here rather than by an Orbax preservation policy: Orbax 0.12 keeps the metrics
of a policy only in memory, so after a restart it would delete the best checkpoint.
Each checkpoint's metadata carries the scores of every kept checkpoint instead.
Saves are asynchronous: the training thread only blocks while arrays are copied out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from research.errors import UserError


class Checkpointer:
    """One run's checkpoint directory."""

    def __init__(self, directory: Path, metric: str, mode: str, keep_best: int, async_save: bool):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.metric, self.sign, self.keep_best = metric, (1.0 if mode == "max" else -1.0), keep_best
        self.scores: dict[int, float] = {}
        options = ocp.CheckpointManagerOptions(enable_async_checkpointing=async_save, create=True)
        try:
            self.manager = ocp.CheckpointManager(
                Path(directory).absolute(), options=options, item_names=("state", "meta", "data")
            )
        except PermissionError as e:
            raise UserError(
                f"cannot write checkpoints to {directory} ({e.strerror}): choose hydra.run.dir"
            ) from e

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, data_iterator: Any = None, metrics: dict | None = None):
        """Queue a save of ``state`` (device arrays), ``meta`` (JSON) and the grain iterator if any."""
        ocp = self._ocp
        if metrics is not None and self.metric in metrics:
            self.scores[step] = float(metrics[self.metric])
        keep = self._keep(latest=step)
        self.scores = {s: v for s, v in self.scores.items() if s in keep}
        meta = {**meta, "scores": {str(k): v for k, v in self.scores.items()}}
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        for old in self.manager.all_steps():
            if old not in keep:
                self.manager.delete(old)

    def _keep(self, latest: int) -> set[int]:
        """The latest step and the best k scored ones (the newest wins a tie)."""
        ranked = sorted(self.scores, key=lambda s: (self.sign * self.scores[s], s), reverse=True)
        return {latest, *ranked[: self.keep_best]}

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> tuple[Any, dict]:
        """State restored into the shapes, dtypes and shardings of ``abstract_state``, plus the metadata."""
        ocp = self._ocp
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        meta = restored["meta"]
        self.scores = {int(k): v for k, v in meta.get("scores", {}).items()}
        return restored["state"], meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def writable_or_raise(directory: Path) -> None:
    """Fail early, with one line, when the run directory cannot be written."""
    directory = Path(directory)
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UserError(f"run directory {directory} is not writable: choose another with hydra.run.dir=...")
