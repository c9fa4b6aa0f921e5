"""Errors a user can cause and fix. The CLI prints their message as one line and exits non-zero."""


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
