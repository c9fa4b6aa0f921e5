"""SIGTERM/SIGUSR1/SIGINT mean "save and leave": the loop checks the flag between calls.

Slurm sends SIGTERM on preemption or ``scontrol requeue`` (and SIGUSR1 ahead of the
time limit when asked to with ``--signal``). After the checkpoint is written the
job requeues itself when Slurm allows it, and the rerun resumes in the same run
directory, which is derived from the job id.

Ctrl-C (SIGINT) saves too and stops the run, and a sweep with it (exit code 130); a
second Ctrl-C stops the process at once, without saving, also with 130 and one line.
``python -m research.train`` takes Ctrl-C over for the whole process (``take_ctrl_c``):
a flag, checked between calls and before each job of a sweep, rather than a
KeyboardInterrupt that can land anywhere, including in a garbage-collector callback,
where Python prints and drops it and a whole Optuna search would carry on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from research.errors import EXIT_INTERRUPTED, Interrupted, Preempted

STOPPED_AT_ONCE = (
    "error: Ctrl-C again: stopped at once, without saving; "
    "rerun the same command to resume from the last checkpoint\n"
)


_ctrl_c = {"pressed": False}


def take_ctrl_c() -> None:
    """From now on Ctrl-C raises a flag (``ctrl_c_pressed``); a second one ends the process.

    Left alone when the process started with SIGINT ignored (nohup, a background job).
    """
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        signal.signal(signal.SIGINT, _on_ctrl_c)


def _on_ctrl_c(signum, frame) -> None:
    if _ctrl_c["pressed"]:
        _stop_at_once()
    _ctrl_c["pressed"] = True


def _stop_at_once() -> None:
    """One line on stderr and exit 130 now: no cleanup, no traceback, whatever the main thread was doing.

    A KeyboardInterrupt would unwind through the checkpoint and W&B shutdown code that a
    second Ctrl-C is meant to cut short, and print a traceback. Written with ``os.write``:
    the handler may have interrupted a write to the same stream.
    """
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os.write(sys.stderr.fileno(), STOPPED_AT_ONCE.encode())
    os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def ctrl_c_saves() -> Iterator[None]:
    """Within it, Ctrl-C saves and stops the run as under ``research.train`` (``Interrupted``), and a
    second one raises KeyboardInterrupt; after it, the handler and the flag are as before. For a
    process that goes on after the run: a notebook's kernel, whose interrupt button sends SIGINT.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        _on_ctrl_c,
    ):
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_ctrl_c_within)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _ctrl_c["pressed"] = False


def _on_ctrl_c_within(signum, frame) -> None:
    if _ctrl_c["pressed"]:
        raise KeyboardInterrupt
    _ctrl_c["pressed"] = True


def ctrl_c_pressed() -> bool:
    return _ctrl_c["pressed"]


class PreemptionFlag:
    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    @property
    def interrupted(self) -> bool:
        return ctrl_c_pressed()

    @property
    def set(self) -> bool:
        return self.signal is not None or self.interrupted

    def restore(self) -> None:
        """The handlers from before, once: a later call leaves what was set since (SIG_IGN while a
        requeued Slurm job closes its records) alone.
        """
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def requeue_if_slurm() -> bool:
    """Ask Slurm to requeue this job (batch jobs started with --requeue). True when it accepted.

    Only process 0 asks. When the signal came from Slurm's own requeue, the request
    fails (the job is already pending a restart) and False is returned. Once Slurm
    accepts, it ends the job with SIGTERM: from then on this process ignores SIGTERM,
    so that it finishes closing its records (the W&B run) and exits by itself, within
    Slurm's KillWait.
    """
    import jax

    if jax.process_index() != 0:
        return False
    job = os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = (
        f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if job
        else os.environ.get("SLURM_JOB_ID")
    )
    if not job_id:
        return False
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        accepted = (
            subprocess.run(["scontrol", "requeue", job_id], capture_output=True, timeout=30).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        accepted = False
    if not accepted:
        signal.signal(signal.SIGTERM, previous)
    return accepted


def leave_preempted(ckpt: Any, preempt: PreemptionFlag, writers: Any, step: int) -> None:
    """The checkpoint of ``step`` is saved: close everything and raise what the CLI reports."""
    if ckpt:
        ckpt.close()
    writers.close()  # before the requeue: Slurm answers it with a SIGTERM that would cut W&B short
    requeued = not preempt.interrupted and requeue_if_slurm()
    if preempt.interrupted:
        raise Interrupted(f"interrupted at step {step}; checkpoint saved{_resume_hint()}")
    raise Preempted(
        f"preempted at step {step}; checkpoint saved" + ("; job requeued" if requeued else _resume_hint())
    )


def _resume_hint() -> str:
    if os.environ.get("SLURM_JOB_ID"):
        return "; the run resumes when Slurm restarts the job (or rerun the same command)"
    return "; rerun the same command to resume"
