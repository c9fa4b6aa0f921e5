"""What a run costs besides training: compilation (cached across runs) and a profiler trace on request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from research.config import compose_train
from research.engine.profiler import ProfileWindow
from research.errors import ConfigError
from research.experiment import run
from tests.conftest import ROOT, TINY

SHORT = (
    "trainer.max_steps=32",
    "trainer.eval_every=16",
    "optimizer/schedule=constant",
    "trainer.plots=false",
)


# research.train with a listener on JAX's own record of the persistent compilation cache, its
# events counted and printed at the exit: a program found in the cache is a hit, one compiled and
# written to it a "cache miss" (JAX records that event at the write).
COUNTING_TRAIN = """
import collections, json, runpy, sys
import jax.monitoring
counts = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kwargs: counts.update([event]))
sys.argv = ["research.train", *sys.argv[1:]]
try:
    runpy.run_module("research.train", run_name="__main__")
finally:
    print("cache events:", json.dumps(counts), file=sys.stderr)
"""
HITS, WRITES = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"


def counted_run(run_dir: Path, cache: Path) -> dict[str, int]:
    """One CLI run with ``trainer.compile_cache=cache``; JAX's cache events of it by name."""
    proc = subprocess.run(
        [sys.executable, "-c", COUNTING_TRAIN, *TINY, *SHORT, f"trainer.compile_cache={cache}",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("cache events: ")]
    return json.loads(line.removeprefix("cache events: "))


def cache_entries(cache: Path) -> dict[str, int]:
    """The cache's files by name, with their modification times (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}


def test_a_second_identical_run_loads_its_programs_from_the_cache(tmp_path: Path) -> None:
    """By the cache's own record, not by wall time: the first run of an empty cache compiles its
    programs and writes them; the second identical run loads every one of them from there and
    compiles and writes nothing. (The preflight check's tiny PRNG-key programs compile before the
    cache is enabled, in every run: neither found nor written there, they count in neither.)"""
    cache = tmp_path / "cache"
    first = counted_run(tmp_path / "first", cache)
    assert first.get(WRITES, 0) >= 3 and first.get(HITS, 0) == 0, first  # init, train, eval at least
    written = cache_entries(cache)
    assert written, "the first run writes the programs it compiled"
    second = counted_run(tmp_path / "second", cache)
    assert second.get(HITS, 0) == first[WRITES] and second.get(WRITES, 0) == 0, (first, second)
    assert cache_entries(cache) == written, "nothing compiled anew, nothing written"
    first_summary, second_summary = (
        json.loads((tmp_path / name / "summary.json").read_text()) for name in ("first", "second")
    )
    assert second_summary["test/loss"] == first_summary["test/loss"], "a cached program computes the same"


def test_profile_writes_a_trace_of_the_window_into_the_run_directory(tmp_path: Path) -> None:
    """trainer.profile=true leaves one jax.profiler trace of the steps window in <run dir>/profile."""
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
    """The trace starts before the first call that overlaps [start, stop) and stops after the last."""
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
    """trainer.profile_steps must be [start, stop) with 0 <= start < stop."""
    with pytest.raises(ConfigError, match="trainer.profile_steps"):
        ProfileWindow(True, steps, tmp_path)
