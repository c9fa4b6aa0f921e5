"""Engine pieces in isolation: call boundaries, calls in flight, eval padding, data order, the JSONL
record, mesh sizes."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from research.engine.dispatch import InFlight
from research.engine.feed import eval_indices
from research.engine.loop import _next_boundary, _steps_per_call
from research.engine.plots import curve_series
from research.engine.sharding import mesh_shape
from research.engine.writers import JsonlWriter
from research.errors import ConfigError


def test_calls_stop_at_every_interval_boundary() -> None:
    step, stops = 0, []
    while step < 100:
        step = min(_next_boundary(step, [16, 32, 40, 40], 100), step + 16)
        stops.append(step)
    assert stops == [16, 32, 40, 48, 64, 80, 96, 100]


@pytest.mark.parametrize(
    ("limit", "intervals", "expected"),
    [
        (16, (40, 40), 10),
        (16, (32, 64), 16),
        (16, (37, 37), 16),
        (16, (45, 90), 15),
        (8, (1000, 500), 5),
    ],
)
def test_steps_per_call_divides_the_intervals_when_it_can(
    limit: int, intervals: tuple, expected: int
) -> None:
    assert _steps_per_call(limit, *intervals) == expected


def test_calls_in_flight_are_read_oldest_first_and_capped_on_cpu_meshes() -> None:
    capped, free = InFlight(limit=16), InFlight(limit=None)
    for step, n in [(0, 10), (10, 6), (16, 10)]:
        for queue in (capped, free):
            queue.add(step, n, {"loss": jnp.full((n,), float(step))})
        if step == 10:
            assert capped.full()  # 16 steps queued: a CPU mesh reads now
            assert [c[:2] for c in capped.read()] == [(0, 10), (10, 6)]
    assert not free.full()
    calls = free.read()
    assert [c[:2] for c in calls] == [(0, 10), (10, 6), (16, 10)]
    assert all(isinstance(m["loss"], np.ndarray) and (m["loss"] == s).all() for s, _, m in calls)
    assert free.calls == [] and [c[:2] for c in capped.read()] == [(16, 10)]


def test_learning_curves_show_the_metrics_recorded_on_several_splits() -> None:
    history = [
        {"step": 10, "train/loss": 1.0, "train/steps_per_s": 900.0, "train/my_score": 0.1},
        {"step": 10, "val/my_score": 0.2, "val/loss": 1.1, "val/only_here": 3.0},
        {"step": 20, "train/loss": 0.5, "train/my_score": 0.3},
    ]
    panels = curve_series(history)
    assert sorted(panels) == ["loss", "my_score"]
    assert panels["loss"]["train"] == ([10, 20], [1.0, 0.5]) and panels["my_score"]["val"] == ([10], [0.2])
    assert sorted(curve_series([{"step": 1, "train/a": 1.0, "train/b": 2.0}])) == ["a", "b"]


def test_eval_indices_cover_every_example_once() -> None:
    idx, mask = eval_indices(10, 4)
    assert idx.shape == mask.shape == (3, 4)
    assert sorted(idx.ravel()[mask.ravel() > 0].tolist()) == list(range(10))
    assert mask.sum() == 10


def test_jsonl_resume_drops_steps_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    writer = JsonlWriter(path, None)
    for step in (10, 20, 30):
        writer.write(step, {"train/loss": np.float32(1.0 / step), "val/accuracy": float("nan")})
    writer.close()
    writer = JsonlWriter(path, resume_step=20)
    writer.write(30, {"train/loss": 0.5})
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30]
    assert records[-1]["train/loss"] == 0.5 and records[0]["val/accuracy"] == "nan"


@pytest.mark.parametrize(
    ("sizes", "devices", "shape"),
    [
        ({"data": -1}, 8, (8, 1, 1)),
        ({"data": 4, "fsdp": 2}, 8, (4, 2, 1)),
        ({"data": 2, "tensor": 4}, 8, (2, 1, 4)),
        ({"data": -1, "tensor": 2}, 8, (4, 1, 2)),
    ],
)
def test_mesh_shape_resolves_the_rest(sizes: dict, devices: int, shape: tuple) -> None:
    assert mesh_shape(sizes, devices) == shape


@pytest.mark.parametrize("sizes", [{"data": 3}, {"data": -1, "fsdp": -1}, {"data": 0}])
def test_mesh_shape_rejects_what_does_not_fit(sizes: dict) -> None:
    with pytest.raises(ConfigError):
        mesh_shape(sizes, 8)
