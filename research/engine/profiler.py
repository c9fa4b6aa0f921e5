"""A ``jax.profiler`` trace of a window of train steps, written into the run directory.

``trainer.profile=true`` traces the calls that overlap ``trainer.profile_steps``
([start, stop)); the default window skips the first call, whose time is mostly
compilation. The trace lands in ``<run dir>/profile/plugins/profile/<time>/`` as an
XSpace file (``*.xplane.pb``): open it with TensorBoard's profile plugin
(``tensorboard --logdir <run dir>/profile``) or XProf. Process 0 traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax

from research.errors import ConfigError


class ProfileWindow:
    """Starts the trace before the first call in the window and stops it after the last."""

    def __init__(self, enabled: bool, steps: Sequence[int], directory: Path):
        if enabled and (len(steps) != 2 or not 0 <= steps[0] < steps[1]):
            raise ConfigError(f"trainer.profile_steps={list(steps)} must be [start, stop], 0 <= start < stop")
        self.enabled = enabled and jax.process_index() == 0
        self.start, self.stop = (int(s) for s in steps) if enabled else (0, 0)
        self.directory = Path(directory)
        self.active = self.done = False

    def before(self, step: int, n: int) -> None:
        """Called before the call that runs steps [step, step + n)."""
        if self.enabled and not (self.active or self.done) and step < self.stop and step + n > self.start:
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int) -> None:
        """Called once the call has finished and ``step`` steps are done."""
        if self.active and step >= self.stop:
            self.close()

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active, self.done = False, True
