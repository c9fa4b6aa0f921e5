"""When to checkpoint: every ``every`` steps and/or ``every_s`` seconds, and whenever forced."""

from __future__ import annotations

import time

import jax
import numpy as np

from research.engine.settings import CheckpointConfig


class SavePolicy:
    """The end, early stopping, preemption and Ctrl-C force a save; a short run saves once, at its end."""

    def __init__(self, cfg: CheckpointConfig):
        self.every, self.every_s = cfg.every, cfg.every_s
        self.last = time.monotonic()

    @property
    def intervals(self) -> list[int]:
        """Step intervals that calls must end on."""
        return [int(self.every)] if self.every else []

    def due(self, step: int, forced: bool) -> bool:
        by_time = self.every_s is not None and time.monotonic() - self.last >= float(self.every_s)
        if jax.process_count() > 1:  # every process must take part in a save: process 0 decides
            from jax.experimental import multihost_utils

            by_time = bool(multihost_utils.broadcast_one_to_all(np.int32(by_time)))
        return forced or by_time or bool(self.every and step % int(self.every) == 0)

    def saved(self) -> None:
        self.last = time.monotonic()
