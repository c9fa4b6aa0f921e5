"""Training progress on the console: a live tqdm bar at a terminal, plain lines in a file.

A tqdm bar redraws itself with carriage returns; written to a file (``> train.log``,
a Slurm job's output) that is thousands of overwritten fragments on one line. When
stdout is not a terminal the same updates become one line per log interval:

    step 320/1350 (24%) | loss 0.2147 | steps_per_s 1,830 | ETA 0:00:06
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Protocol


class Progress(Protocol):
    def update(self, step: int, n: int, postfix: dict[str, str]) -> None:
        """After a compiled call of ``n`` steps that ended at ``step``."""

    def close(self) -> None: ...


def make_progress(total: int, initial: int, enabled: bool, log_every: int) -> Progress:
    """A tqdm bar at a terminal, else a line per ``log_every`` steps (and at the end); nothing if disabled."""
    if not enabled:
        return _Silent()
    if sys.stdout.isatty():
        return _Bar(total, initial)
    return _Lines(total, initial, log_every)


class _Silent:
    def update(self, step: int, n: int, postfix: dict[str, str]) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    """tqdm, redrawn in place (on stderr, as tqdm does)."""

    def __init__(self, total: int, initial: int):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)

    def update(self, step: int, n: int, postfix: dict[str, str]) -> None:
        self._bar.update(n)
        self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self._bar.close()


class _Lines:
    """One line on stdout each time ``step`` crosses a multiple of ``log_every``, and at the end."""

    def __init__(self, total: int, initial: int, log_every: int):
        self.total, self.log_every = total, log_every
        self._start_step, self._start_time = initial, time.perf_counter()

    def update(self, step: int, n: int, postfix: dict[str, str]) -> None:
        crossed = step // self.log_every > (step - n) // self.log_every
        if crossed or step >= self.total:
            print(self.line(step, postfix), flush=True)

    def line(self, step: int, postfix: dict[str, str]) -> str:
        fields = [f"step {step}/{self.total} ({100 * step // max(self.total, 1)}%)"]
        fields += [f"{key} {value}" for key, value in postfix.items()]
        fields.append(f"ETA {self._eta(step)}")
        return " | ".join(fields)

    def _eta(self, step: int) -> str:
        """Remaining steps at the average pace so far (compilation included: early ETAs run long)."""
        done = step - self._start_step
        if done <= 0:
            return "?"
        seconds = (time.perf_counter() - self._start_time) / done * max(self.total - step, 0)
        return str(timedelta(seconds=round(seconds)))

    def close(self) -> None:
        pass
