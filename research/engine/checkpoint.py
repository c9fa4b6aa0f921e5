"""Orbax checkpoints: the train state, the loop's metadata and the data iterator.

Keeps the latest checkpoint and the best k by a validation metric. The retention is
decided here rather than by an Orbax preservation policy: Orbax 0.12 keeps the metrics
of a policy only in memory, so after a restart it would delete the best checkpoint.
Each checkpoint's metadata carries the scores of every kept checkpoint instead.
Saves are asynchronous: the training thread only blocks while arrays are copied out.

A save can carry an earlier best state as its item ``best`` (the end of a run writes the
last and the best state as one save: every Orbax save costs ~0.1 s however small, which a
short run notices). That best step has no directory of its own; its ``home`` is the step
that holds it, recorded in the metadata, and ``steps``/``restore``/``state_dir`` treat
it like any other step.

Faults end in one line and lose nothing: a checkpoint that cannot be read is moved
aside to ``checkpoints_unreadable/`` and the next newest is used; a save that fails
(a full disk) names the path and the last checkpoint that is intact.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from research.engine.orbax_reads import orbax, reading
from research.errors import CheckpointError, CheckpointUnreadable, UserError

UNREADABLE_DIR = "checkpoints_unreadable"
STATE, BEST = "state", "best"  # the items holding a step's own state, and a best state saved with it
SPACE_MARGIN = 1.25  # a checkpoint's size on disk over its arrays' bytes (metadata, OCDBT overhead)
SPACE_SLACK = 1 << 20  # bytes kept free beyond that, for the metadata and the JSONL record


class Checkpointer:
    """One run's checkpoint directory."""

    def __init__(
        self,
        directory: Path,
        metric: str,
        mode: str,
        keep_best: int,
        async_save: bool,
        read_only: bool = False,
    ):
        """``read_only``: for reading a saved run; nothing is created, written or deleted."""
        ocp = orbax()
        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.metric, self.sign, self.keep_best = metric, (1.0 if mode == "max" else -1.0), keep_best
        self.scores: dict[int, float] = {}
        self._options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save, create=not read_only, read_only=read_only
        )
        self._written: list[int] = []  # saves of this process, newest last
        try:
            self.manager = self._open()
        except PermissionError as e:
            raise UserError(
                f"cannot write checkpoints to {directory} ({e.strerror}): choose hydra.run.dir"
            ) from e
        self.homes: dict[int, int] = self._saved_homes()  # best step -> the step holding it as BEST

    def _open(self) -> Any:
        return self._ocp.CheckpointManager(
            self.directory, options=self._options, item_names=(STATE, "meta", "data", BEST)
        )

    def steps(self) -> list[int]:
        """Every restorable step: those with a directory, and best states saved inside another."""
        own = set(self.manager.all_steps())
        return sorted(own | {b for b, home in self.homes.items() if home in own})

    def state_dir(self, step: int) -> Path:
        """Where the arrays of ``step``'s state are: ``<step>/state``, or ``<home>/best``."""
        if step in self.homes and not (self.directory / str(step)).is_dir():
            return self.directory / str(self.homes[step]) / BEST
        return self.directory / str(step) / STATE

    def latest_step(self) -> int | None:
        """The highest saved step (Orbax's own latest is the one saved last, which may be a best)."""
        steps = sorted(self.manager.all_steps())
        return steps[-1] if steps else None

    def _saved_homes(self) -> dict[int, int]:
        """The best states held inside other steps, by the latest checkpoint's metadata."""
        latest = self.latest_step()
        try:
            return {} if latest is None else _homes(self._read_meta(latest))
        except CheckpointUnreadable:  # restore_latest reports it
            return {}

    def _read_meta(self, step: int) -> dict:
        with reading(self.directory / str(step)):
            args = self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())
            return self.manager.restore(step, args=args)["meta"]

    def best_step_saved(self) -> int | None:
        """The best step by the metadata of the latest checkpoint (None if it names none)."""
        latest = self.latest_step()
        if latest is None:
            return None
        return self._read_meta(latest).get("best_step")

    def last_good_step(self) -> int | None:
        """The newest checkpoint whose save has finished (or failed) by now."""
        try:
            self.wait()
        except CheckpointError:
            pass
        return self.latest_step()

    def save(
        self,
        step: int,
        state: Any,
        meta: dict,
        data_iterator: Any = None,
        metrics: dict | None = None,
        best: tuple[int, Any, dict] | None = None,
    ) -> None:
        """Queue a save of ``state`` (device arrays), ``meta`` (JSON) and the grain iterator if any;
        ``best`` = (step, state, metrics) of an earlier best state to store with it, as its item BEST.
        """
        ocp = self._ocp
        scored = [(step, metrics)] + ([(best[0], best[2])] if best is not None else [])
        for scored_step, scored_metrics in scored:
            if scored_metrics is not None and self.metric in scored_metrics:
                self.scores[scored_step] = float(scored_metrics[self.metric])
        if best is not None:
            self.homes[best[0]] = step
        keep = self._keep(latest=max([step, *self._written]))
        self.scores = {s: v for s, v in self.scores.items() if s in keep}
        self.homes = {s: h for s, h in self.homes.items() if s in keep}
        dirs = {self.homes.get(s, s) for s in keep}
        meta = {
            **meta,
            "scores": {str(k): v for k, v in self.scores.items()},
            "homes": {str(k): v for k, v in self.homes.items()},
        }
        items = {STATE: ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if best is not None:
            items[BEST] = ocp.args.StandardSave(best[1])
        if data_iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        # The previous write finishes first (Orbax's save would wait for it anyway), so the space
        # check and the "last good checkpoint" of an error count it, and no write is left running
        # when a failed save ends the run.
        self.wait()
        with self._write_errors(step):
            self._check_space(state if best is None else (state, best[1]))
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
            for old in self.manager.all_steps():
                if old not in dirs and old != step:
                    self.manager.delete(old)
        self._written.append(step)

    def _check_space(self, state: Any) -> None:
        """A disk without room for this checkpoint fails here, cleanly, before Orbax starts writing
        (a write that fails midway leaves Orbax's background writers erroring on their way out).
        """
        import jax

        need = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(state)) * SPACE_MARGIN + SPACE_SLACK
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise OSError(f"{free / 2**20:.1f} MiB free, a checkpoint needs about {need / 2**20:.1f} MiB")

    def _keep(self, latest: int) -> set[int]:
        """The latest step and the best k scored ones (the newest wins a tie)."""
        ranked = sorted(self.scores, key=lambda s: (self.sign * self.scores[s], s), reverse=True)
        return {latest, *ranked[: self.keep_best]}

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> tuple[Any, dict]:
        """State restored into the shapes, dtypes and shardings of ``abstract_state``, plus the metadata
        (that of the step holding it, for a best state saved inside another step).
        """
        ocp = self._ocp
        item = self.state_dir(step).name
        home = int(self.state_dir(step).parent.name)
        items = {item: ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        with reading(self.directory / str(home)):
            restored = self.manager.restore(home, args=ocp.args.Composite(**items))
        meta = restored["meta"]
        self.scores = {int(k): v for k, v in meta.get("scores", {}).items()}
        self.homes = _homes(meta)
        return restored[item], meta

    def restore_latest(self, abstract_state: Any, data_iterator: Any = None) -> tuple[Any, dict, Path] | None:
        """The newest checkpoint that reads; unreadable ones are reported and moved aside."""
        for step in reversed(self.steps()):
            path = self.directory / str(step)
            try:
                state, meta = self.restore(step, abstract_state, data_iterator)
                return state, meta, path
            except CheckpointUnreadable as e:
                if not path.exists():
                    raise
                aside = self._move_aside(step)
                print(f"warning: {e}; moved to {aside}", flush=True)
        return None

    def _move_aside(self, step: int) -> Path:
        aside_dir = self.directory.parent / UNREADABLE_DIR
        aside_dir.mkdir(exist_ok=True)
        target = aside_dir / str(step)
        n = 1
        while target.exists():
            target, n = aside_dir / f"{step}.{n}", n + 1
        shutil.move(str(self.directory / str(step)), str(target))
        self.manager.close()
        self.manager = self._open()
        return target

    def _write_errors(self, step: int):
        return _WriteErrors(self, step)

    def wait(self) -> None:
        with self._write_errors(self._written[-1] if self._written else -1):
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


class _WriteErrors:
    """A failed write (full disk, read-only or lost mount) as one CheckpointError line."""

    def __init__(self, ckpt: Checkpointer, step: int):
        self.ckpt, self.step = ckpt, step

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        if error is None or isinstance(error, UserError) or not isinstance(error, Exception):
            return False
        ckpt = self.ckpt
        good = [s for s in ckpt.steps() if (ckpt.directory / str(s)).is_dir() and s != self.step]
        last = (
            f"the last good checkpoint is step {good[-1]} in {ckpt.directory}"
            if good
            else "no checkpoint was kept"
        )
        text = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(
            f"could not write the checkpoint of step {self.step} to {ckpt.directory} ({text}); {last}: "
            "free disk space or choose another hydra.run.dir, then rerun to resume"
        ) from None


def _homes(meta: dict) -> dict[int, int]:
    return {int(k): int(v) for k, v in meta.get("homes", {}).items()}
