"""The run directory as the trainer finds it: locked while it trains, an earlier run's files set
aside rather than overwritten.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from research.errors import UserError

START_SPACE = 1 << 16  # bytes a run must be able to write before it starts (its config, first records)
PREVIOUS = ("checkpoints", "metrics.jsonl", "summary.json", "plots", "eval.json", "tensorboard")


def set_aside_previous(run_dir: Path, names: tuple[str, ...] = PREVIOUS, why: str = "") -> Path | None:
    """Move an earlier run's files (``names``) into ``replaced/<time>/``, so that nothing saved is
    lost and the new run starts from nothing: with ``trainer.resume=false``, or (``why``) when an
    earlier attempt left records but no checkpoint to resume from.
    """
    present = [name for name in names if (run_dir / name).exists()]
    if not present:
        return None
    aside = run_dir / "replaced" / time.strftime("%Y-%m-%d_%H-%M-%S")
    aside.mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.move(str(run_dir / name), str(aside / name))
    print(f"{why or 'trainer.resume=false'}: the earlier run's files are moved to {aside}", flush=True)
    return aside


CLASSES = "classes.json"  # the class names the run's labels stand for, in label order


def record_classes(run_dir: Path, names: list[str]) -> None:
    """Write ``classes.json``: a reader of the run (evaluate, export) names the classes by it, and a
    rebuilt dataset that orders other classes under the same labels is caught (``saved.py``)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / CLASSES).write_text(json.dumps(list(names)) + "\n")


def recorded_classes(run_dir: Path) -> list[str] | None:
    """The class names the run trained on, or None where it recorded none (older runs, no labels)."""
    try:
        return list(json.loads((Path(run_dir) / CLASSES).read_text()))
    except (OSError, ValueError):
        return None


LOCK = ".lock"  # {"pid", "host", "started"} of the process training in the directory


class RunLock:
    """A run directory is trained by one process at a time.

    The lock is a file created atomically (``O_EXCL``) holding the holder's PID and host. A lock
    whose holder is gone (``kill -9``) is stale on its own host and taken over; one held on another
    host (a cluster file system) cannot be checked from here and is respected, unless it is this
    Slurm job's own earlier attempt (a requeue after a node failure).
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise UserError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = json.dumps({**_me(), "started": time.time()})
        for _ in range(2):  # a second try after taking over a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(mine)
            self.held = True
            atexit.register(self.release)
            return
        raise UserError(f"could not lock {self.path.parent}: another process took it at the same moment")

    def _take_over_if_stale(self) -> None:
        holder = self._holder()
        if holder is None:  # written but not yet filled, or garbled: its writer decides
            time.sleep(0.1)
            holder = self._holder() or {"pid": 0, "host": socket.gethostname()}
        requeued = holder.get("slurm_job") and holder.get("slurm_job") == _me()["slurm_job"]
        elsewhere = holder["host"] != socket.gethostname()
        if not requeued and (elsewhere or _alive(int(holder["pid"]))):
            raise UserError(
                f"{self.path.parent} is being trained by PID {holder['pid']} on {holder['host']}: wait "
                "for it to finish, or choose another hydra.run.dir"
            )
        self.path.unlink(missing_ok=True)
        print(
            f"note: {self.path.parent} was locked by PID {holder['pid']}, which is gone; taken over",
            flush=True,
        )

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if {"pid", "host"} <= set(holder) else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            self.held = False
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)


def _me() -> dict:
    """This process as a lock holder; a Slurm job's id too (its requeued self may take the lock over)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID"))
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": f"{job}_{task}" if task else job}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def writable_or_raise(directory: Path) -> None:
    """Fail early, with one line, when the run directory cannot be written."""
    directory = Path(directory)
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UserError(f"run directory {directory} is not writable: choose another with hydra.run.dir=...")
    try:  # a full disk (or a read-only mount, which os.access does not see as root) fails here
        with tempfile.TemporaryFile(dir=probe) as f:
            f.write(b"\0" * START_SPACE)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        hint = "free disk space or choose" if e.errno == errno.ENOSPC else "choose"
        what = f"run directory {directory} cannot be written ({e.strerror})"
        raise UserError(f"{what}: {hint} another with hydra.run.dir=...") from None
