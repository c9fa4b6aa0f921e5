"""What every command shows the user: one-line errors with their exit codes, and the headline numbers.

Below the commands and above nothing but ``errors``: any command (train, evaluate,
compare, study, the launchers) reports through it the same way.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from research.errors import (
    EXIT_INTERRUPTED,
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    ConfigError,
    Interrupted,
    Preempted,
    TrialPruned,
    UserError,
)

# Entries of every summary worth a line on the console, after the evaluated metrics.
RUN_FIGURES = ("steps", "best_step", "trace_s", "compile_s", "wall_s", "train/steps_per_s")
EVALUATED = ("test/", "eval/", "val/", "cv/")
NOT_HEADLINES = ("_per_seed", "_per_fold", "confusion_matrix")


class _Tee:
    """A console stream that also appends each finished line to a record (progress-bar redraws,
    which end in a carriage return, only as their last state)."""

    def __init__(self, stream: TextIO, record: TextIO):
        self.stream, self.record, self.pending = stream, record, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        self.pending = self.pending.rsplit("\r", 1)[-1]  # a bar redrawn all run long stays one line
        for line in lines:
            self.record.write(line.rsplit("\r", 1)[-1] + "\n")
        self.record.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the console's
        return getattr(self.stream, name)


@contextlib.contextmanager
def recorded(path: Path) -> Iterator[None]:
    """What the console shows while inside, appended to ``path`` too (a run's train.log)."""
    try:
        record = open(path, "a")  # noqa: SIM115 - closed below, after the streams are put back
    except OSError:  # a record that cannot be written is no reason to stop the run
        yield
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, record), _Tee(err, record)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        record.close()


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextlib.contextmanager
def report_errors(exit_on_error: bool = True) -> Iterator[None]:
    """UserError -> one line on stderr; exit (single run) or let the sweep go on (multirun)."""
    from hydra.errors import InstantiationException

    try:
        yield
    except Interrupted as e:
        fail(str(e), EXIT_INTERRUPTED)
    except Preempted as e:
        fail(str(e), EXIT_PREEMPTED)
    except TrialPruned as e:
        if exit_on_error:
            fail(str(e))
        print(f"trial {e}", file=sys.stderr)
        raise  # to the sweeper, which records the trial as pruned
    except (UserError, InstantiationException) as e:
        error = e.__cause__ if isinstance(e, InstantiationException) else e
        if not isinstance(error, UserError):  # a bug, not bad input: keep the traceback
            raise
        if exit_on_error:
            fail(str(error))
        print(f"error: {error}", file=sys.stderr)


def key_values(
    argv: Sequence[str], defaults: dict[str, str], names: Sequence[str], usage: str, overrides: bool
) -> tuple[dict[str, str], list[str]]:
    """A reading command's ``key=value`` arguments: its own ``names`` over ``defaults``, and the rest
    as config overrides where it takes them (``overrides``), else one line; ``run=`` is required.
    """
    options, rest = dict(defaults), []
    own = {"run", *names, *defaults}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in own:
            options[key] = value
        elif sep and overrides:
            rest.append(arg)
        else:
            raise ConfigError(f"{arg!r} is not one of {', '.join(f'{k}=' for k in sorted(own))}; {usage}")
    if "run" not in options:
        raise ConfigError(f"run=<run dir> is required; {usage}")
    return options, rest


def print_summary(summary: dict, headline: Sequence[str] = ()) -> None:
    """The evaluated metrics, the task's ``headline`` entries and the run's figures, on stdout
    (the full summary is in summary.json).
    """
    keys = [k for k in summary if k.startswith(EVALUATED) and not k.endswith(NOT_HEADLINES)]
    keys += [*headline, *RUN_FIGURES]
    shown = {k: summary[k] for k in keys if k in summary}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items()}, indent=1))


def print_run_dir(run_dir: Path) -> None:
    """Where the run's files are: said when it starts, so it can be watched, and again at the end,
    under the numbers, where a long log has scrolled the first line away.
    """
    print(f"run dir: {run_dir}", flush=True)
