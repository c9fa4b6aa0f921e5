"""Errors a user can cause and fix, and the exit codes the CLI ends with.

The CLI prints an error's message as one line and exits non-zero.
"""

EXIT_USER_ERROR = 2  # bad input: the one line says what to change
EXIT_INTERRUPTED = 130  # Ctrl-C: saved, stopped
EXIT_PREEMPTED = 143  # SIGTERM/SIGUSR1 (Slurm): saved, requeued where Slurm allows


class UserError(Exception):
    """Bad input: the message names what to change. Shown without a traceback."""


class ConfigError(UserError):
    """A config value is missing, of the wrong type or out of range."""


class DataError(UserError):
    """A dataset is not prepared or cannot be read."""


class NonFiniteLossError(UserError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class CheckpointError(UserError):
    """A checkpoint could not be written (full disk, lost mount); earlier ones are intact."""


class TrialPruned(UserError):
    """A sweeper's pruner stopped this trial; the run's files say so."""


class CheckpointUnreadable(CheckpointError):
    """A saved checkpoint cannot be read (a truncated or garbled file): not a different config."""


class Preempted(Exception):
    """Raised after the preemption checkpoint is saved (SIGTERM, SIGUSR1)."""


class Interrupted(Preempted):
    """Raised after the checkpoint of a run stopped with Ctrl-C is saved."""
