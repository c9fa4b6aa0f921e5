"""What a run costs besides training: compilation (cached across runs) and a profiler trace on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research.config import compose_train
from research.engine.profiler import ProfileWindow
from research.errors import ConfigError
from research.experiment import run
from tests.conftest import TINY, run_train

SHORT = (
    "trainer.max_steps=32",
    "trainer.eval_every=16",
    "optimizer/schedule=constant",
    "trainer.plots=false",
)


def test_a_second_identical_run_loads_its_programs_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    summaries = []
    for name in ("first", "second"):
        run_train(*TINY, *SHORT, f"trainer.compile_cache={cache}", f"hydra.run.dir={tmp_path / name}")
        summaries.append(json.loads((tmp_path / name / "summary.json").read_text()))
    first, second = summaries
    assert any(cache.iterdir()), "the first run fills the cache"
    # Both runs measured their compilation (a cache hit still costs a load), the second 5x less.
    assert 0 < second["compile_s"] and second["compile_s"] * 5 <= first["compile_s"], (
        first["compile_s"],
        second["compile_s"],
    )
    assert second["test/loss"] == first["test/loss"], "a cached program computes the same numbers"


def test_profile_writes_a_trace_of_the_window_into_the_run_directory(tmp_path: Path) -> None:
    cfg = compose_train(
        [
            *TINY,
            *SHORT,
            "trainer.checkpoint.enabled=false",
            "trainer.compile_cache=null",
            "trainer.steps_per_call=8",
            "trainer.profile=true",
            "trainer.profile_steps=[8,16]",
        ]
    )
    tmp_path.mkdir(exist_ok=True)
    run(cfg, tmp_path)
    traces = list((tmp_path / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000


def test_profile_window_traces_only_the_calls_that_overlap_it(tmp_path: Path, monkeypatch) -> None:
    events = []
    monkeypatch.setattr("jax.profiler.start_trace", lambda d: events.append(("start", d)))
    monkeypatch.setattr("jax.profiler.stop_trace", lambda: events.append(("stop",)))
    window = ProfileWindow(True, [20, 40], tmp_path)
    for step in range(0, 64, 16):  # calls of 16 steps: [0,16) [16,32) [32,48) [48,64)
        window.before(step, 16)
        events.append(("call", step))
        window.after(step + 16)
    window.close()
    assert events == [
        ("call", 0),
        ("start", str(tmp_path)),
        ("call", 16),
        ("call", 32),
        ("stop",),
        ("call", 48),
    ]


@pytest.mark.parametrize("steps", [[16], [32, 16], [-1, 4]])
def test_a_bad_profile_window_is_a_config_error(steps: list, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trainer.profile_steps"):
        ProfileWindow(True, steps, tmp_path)
