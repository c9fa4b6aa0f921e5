"""Image grids from the state alone: reconstructions of a fixed batch, samples from fixed noise.

A ``StateFunction`` evaluator whose image outputs are (N, H, W, C) batches in [0, 1], tiled on
the host with ``images.grid`` (the writers take one image per name). Fixed inputs
(a noise batch, held-out images) are closed over by ``fn``, so every evaluation draws
the same ones and the grids of successive steps compare directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from research import images
from research.engine.api import Result, Schedule
from research.evaluators.state_function import StateFunction


class Grids(StateFunction):
    """``fn(state) -> {name: array}``: names in ``columns`` are image batches, tiled that many across."""

    def __init__(
        self,
        fn: Callable[[Any], dict],
        columns: Mapping[str, int],
        names: Sequence[str] = (),
        schedule: Schedule | None = None,
    ):
        super().__init__(fn, names, schedule, image_keys=tuple(columns))
        self.columns = dict(columns)

    def __call__(self, ctx: Any, state: Any, data: None) -> Result:
        result = super().__call__(ctx, state, data)
        tiled = {k: images.grid(v, self.columns[k]) for k, v in result.images.items()}
        return Result(result.metrics, tiled)
