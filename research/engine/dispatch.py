"""Train calls between dispatch and read-back: what the loop keeps so the device never waits.

``InFlight`` holds dispatched calls whose metrics are not read yet; ``IndicesAhead`` makes the
next call's indices while the device runs the current one.
"""

from __future__ import annotations

from typing import Any

import jax


class InFlight:
    """Train calls dispatched whose metrics the host has not read yet.

    Reading metrics is a host sync, and a loop that syncs after every call leaves the device
    idle while the host prepares the next one (the hand-written loop never syncs). So the loop
    reads them only when a boundary needs them (a record, an evaluation, a save, the end), and
    the device has the next call queued meanwhile. ``limit``: the most steps in flight, for
    CPU meshes of several devices, whose collectives hang with more than ~32 steps queued.
    """

    def __init__(self, limit: int | None):
        self.limit = limit
        self.calls: list[tuple[int, int, Any]] = []

    def add(self, step: int, n: int, metrics: Any) -> None:
        self.calls.append((step, n, metrics))

    def full(self) -> bool:
        return self.limit is not None and sum(n for _, n, _ in self.calls) >= self.limit

    def read(self) -> list[tuple[int, int, dict]]:
        """(first step, steps, metrics on host) of every call in flight, oldest first; waits for them."""
        metrics = jax.device_get([m for _, _, m in self.calls])
        calls = [(step, n, m) for (step, n, _), m in zip(self.calls, metrics, strict=True)]
        self.calls = []
        return calls


def queue_limit(mesh: Any, steps_per_call: int) -> int | None:
    """The most steps in flight: one call on CPU meshes of several devices (their collectives
    hang with more than ~32 steps queued), else no limit (boundaries read them).
    """
    cpu_collectives = mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"
    return steps_per_call if cpu_collectives else None


class IndicesAhead:
    """The next call's ``xs``, made early, when they depend on the step alone: memory and RL
    feeds, not a stream, whose iterator position is checkpointed with the state and must not
    run ahead of it.
    """

    def __init__(self, feed: Any):
        self.feed = feed
        self.made: tuple[tuple[int, int], Any] | None = None

    def xs(self, step: int, n: int) -> Any:
        if self.made is not None and self.made[0] == (step, n):
            return self.made[1]
        return self.feed.xs(step, n)

    def make(self, step: int, n: int) -> None:
        self.made = None
        if self.feed.by_step:
            self.made = ((step, n), self.feed.xs(step, n))
