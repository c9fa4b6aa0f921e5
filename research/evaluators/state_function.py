"""An evaluation that is a jittable function of the state alone: RL rollouts, sample grids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from research.engine.api import Result, Schedule


class StateFunction:
    """``fn(state) -> metrics``, compiled once; ``report(metrics) -> images`` on the host.

    Arrays ``fn`` returns under names in ``image_keys`` become images (from the first replica).
    """

    needs_data = False

    def __init__(
        self,
        fn: Callable[[Any], dict],
        names: Sequence[str],
        schedule: Schedule | None = None,
        image_keys: Sequence[str] = (),
    ):
        self.fn, self.names, self.image_keys = fn, tuple(names), tuple(image_keys)
        self.schedule = schedule or Schedule()
        self._program = None

    def metric_names(self) -> tuple[str, ...]:
        return self.names

    def program(self, ctx: Any) -> Any:
        if self._program is None:
            self._program = jax.jit(ctx.per_replica(self.fn))
        return self._program

    def prepare(self, ctx: Any, state: Any, data: None) -> None:
        ctx.submit(self.program(ctx), state)

    def __call__(self, ctx: Any, state: Any, data: None) -> Result:
        out = jax.device_get(ctx.run(self.program(ctx), state))
        images = {k: np.asarray(out.pop(k)) for k in self.image_keys}
        if ctx.vmapped:
            images = {k: v[0] for k, v in images.items()}
        return Result(out, images)
