"""research.Experiment: the command line's road taken from Python, to the same run directory and numbers."""

from __future__ import annotations

import collections
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.monitoring
import numpy as np
import pytest
import yaml
from flax import nnx
from omegaconf import OmegaConf

import research
from research.data.arrays import ArraySplit, identity_transform
from research.data.base import Dataset
from research.errors import ConfigError
from tests.checkpoints import snapshot
from tests.conftest import ROOT, TINY, run_train

SHORT = ("trainer.max_steps=48", "trainer.eval_every=24", "optimizer/schedule=constant", *TINY)


class TinyNet(nnx.Module):
    """A model of the test's own: the task hands it input_shape and num_outputs, as to its own models."""

    def __init__(self, input_shape, num_outputs: int, width: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(int(np.prod(input_shape)), width, rngs=rngs)
        self.out = nnx.Linear(width, num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


def two_blobs(batch_size: int = 16, eval_batch_size: int = 64, seed: int = 0) -> Dataset:
    """A dataset of the test's own: two Gaussian blobs in the plane, 160/40/40 examples."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> ArraySplit:
        label = rng.integers(0, 2, n).astype(np.int32)
        image = (rng.normal(size=(n, 2)) + 3.0 * label[:, None]).astype(np.float32)
        return ArraySplit({"image": image, "label": label})

    splits = {"train": split(160), "val": split(40), "test": split(40)}
    return Dataset("two_blobs", (2,), 2, splits, identity_transform, batch_size, eval_batch_size, ["a", "b"])


# Where pytest imports this module from (as ``test_python_api``): the CLI finds TinyNet there too.
TESTS_PATH = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
MINE = f"{__name__}.TinyNet"


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=TESTS_PATH,
    )  # fmt: skip


def test_import_research_stays_light() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, research; print('jax' in sys.modules, 'hydra' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.split() == ["False", "False"], proc.stderr


@pytest.mark.slow
def test_a_run_trained_in_python_is_the_cli_run_bit_for_bit(tmp_path: Path) -> None:
    """Trained in-process, evaluated, reopened: the test metrics of the CLI run of the same command;
    the CLI's reading commands open the run directory it wrote.
    """
    exp = research.Experiment("digits_mlp", overrides=SHORT, run_dir=tmp_path / "api")
    summary = exp.train()
    run_train("+experiment=digits_mlp", *SHORT, f"hydra.run.dir={tmp_path / 'cli'}")
    by_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    test_metrics = {k: v for k, v in by_cli.items() if k.startswith("test/")}
    assert test_metrics and {k: summary[k] for k in test_metrics} == test_metrics
    saved = [(tmp_path / d / ".hydra" / "config.yaml").read_text() for d in ("api", "cli")]
    assert saved[0] == saved[1]
    assert yaml.safe_load((tmp_path / "api" / ".hydra" / "overrides.yaml").read_text())[1:] == list(SHORT)
    assert (tmp_path / "api" / "train.log").read_text().count('"test/accuracy"') == 1

    evaluated = exp.evaluate("test")
    reopened = research.Experiment.open(tmp_path / "api")
    assert reopened.evaluate("test", checkpoint="best") == evaluated
    assert {k: evaluated[k] for k in test_metrics} == test_metrics
    batch = reopened.batch("test")
    predicted = reopened.predict(batch["image"]).argmax(-1)
    assert np.mean(predicted == batch["label"]) == pytest.approx(test_metrics["test/accuracy"])
    assert set(reopened.params) == {"hidden", "head"}

    proc = cli("research.evaluate", f"run={tmp_path / 'api'}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "api" / "eval.json").read_text()) == evaluated
    proc = cli("research.export", f"run={tmp_path / 'api'}")
    assert proc.returncode == 0 and (tmp_path / "api" / "exported" / "model.stablehlo").is_file(), proc.stderr

    before = snapshot(tmp_path / "api")
    assert exp.train() == json.loads((tmp_path / "api" / "summary.json").read_text())  # finished
    assert snapshot(tmp_path / "api") == before


@pytest.mark.slow
def test_a_model_and_a_dataset_of_ones_own_train_without_yaml(tmp_path: Path) -> None:
    quicker = [*SHORT, "optimizer.learning_rate=0.01"]
    mine = research.Experiment(
        "digits_mlp",
        overrides=quicker,
        run_dir=tmp_path / "model",
        model=functools.partial(TinyNet, width=32),
    )
    summary = mine.train()
    assert summary["test/accuracy"] > 0.8, summary
    config = yaml.safe_load((tmp_path / "model" / ".hydra" / "config.yaml").read_text())
    assert config["model"] == {"_target_": MINE, "width": 32}
    proc = cli("research.evaluate", f"run={tmp_path / 'model'}")  # importable: the CLI reopens it
    assert proc.returncode == 0, proc.stderr
    assert (
        json.loads((tmp_path / "model" / "eval.json").read_text())["test/accuracy"]
        == summary["test/accuracy"]
    )

    blobs = research.Experiment(
        "digits_mlp",
        overrides=[*quicker, "model.hidden_sizes=[8]"],
        run_dir=tmp_path / "data",
        data=functools.partial(two_blobs, batch_size=8),
    )
    assert blobs.batch("train")["image"].shape == (8, 2)
    assert blobs.train()["test/accuracy"] >= 0.9


def test_an_invalid_override_raises_the_line_the_cli_prints(tmp_path: Path) -> None:
    for override in ("trainer.epoch=3", "data.batch_size=abc"):
        proc = run_train(override, *TINY, f"hydra.run.dir={tmp_path / 'cli'}", check=False, timeout=60)
        assert proc.returncode == 2
        with pytest.raises(ConfigError) as raised:
            research.Experiment("digits_mlp", overrides=[override], run_dir=tmp_path / "api")
        assert proc.stderr.strip() == f"error: {raised.value}"
    assert not (tmp_path / "api").exists() and not (tmp_path / "cli").exists()


def test_objects_that_cannot_be_recorded_by_name_are_one_line() -> None:
    class Local(TinyNet):
        pass

    with pytest.raises(ConfigError, match="cannot be found by its name: define it at the top level"):
        research.Experiment("digits_mlp", model=Local)
    with pytest.raises(ConfigError, match=f"model.depth is not a parameter of {MINE}"):
        research.Experiment("digits_mlp", model={"_target_": TinyNet, "width": 4, "depth": 2})
    with pytest.raises(ConfigError, match="give its arguments by keyword"):
        research.Experiment("digits_mlp", model=functools.partial(TinyNet, (8,)))


@pytest.mark.slow
def test_a_run_of_a_notebook_class_reopened_elsewhere_is_one_line(tmp_path: Path) -> None:
    """A class defined in a notebook is ``__main__.<name>``: another process cannot import it."""
    exp = research.Experiment(
        "digits_mlp", overrides=["logger=none"], model=functools.partial(TinyNet, width=4)
    )
    cfg = exp.cfg.copy()
    cfg.model = {"_target_": "__main__.TinyNet", "width": 4}
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    proc = cli("research.evaluate", f"run={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: model._target_='__main__.TinyNet' cannot be imported: it was defined in a notebook or "
        "script; open the run in a process that defines it (research.Experiment.open), or move it into "
        "a module"
    ]


@pytest.mark.slow
def test_a_cell_run_again_reuses_the_build_and_the_compiled_programs(tmp_path: Path) -> None:
    overrides = ["trainer.max_steps=16", "trainer.eval_every=8"]
    first = research.Experiment("digits_mlp", overrides=[*overrides, *TINY], run_dir=tmp_path / "a")
    first.train()
    events: collections.Counter = collections.Counter()
    jax.monitoring.register_event_listener(lambda event, **kwargs: events.update([event]))
    again = research.Experiment("digits_mlp", overrides=[*overrides, *TINY], run_dir=tmp_path / "b")
    assert again.built is first.built
    assert again.train()["test/accuracy"] == first.summary["test/accuracy"]
    assert events["/jax/compilation_cache/cache_hits"] > 0
    assert events["/jax/compilation_cache/cache_misses"] == 0


@pytest.mark.slow
def test_interrupting_the_kernel_saves_and_train_again_resumes(tmp_path: Path, monkeypatch) -> None:
    """A notebook's interrupt (SIGINT) at step 16 of 32: a checkpoint, Interrupted, the lock free, and
    the handler as before; ``train()`` again goes on from step 16 to the end.
    """
    from research.engine import loop
    from research.errors import Interrupted

    boundary = loop.Loop._boundary

    def interrupted_at_16(self, state, n):
        if self.step == 16:
            os.kill(os.getpid(), signal.SIGINT)
        return boundary(self, state, n)

    monkeypatch.setattr(loop.Loop, "_boundary", interrupted_at_16)
    handler = signal.getsignal(signal.SIGINT)
    overrides = ["trainer.max_steps=32", "trainer.eval_every=8", "trainer.steps_per_call=8", *TINY]
    exp = research.Experiment("digits_mlp", overrides=overrides, run_dir=tmp_path / "run")
    with pytest.raises(Interrupted, match="interrupted at step 16; checkpoint saved"):
        exp.train()
    assert signal.getsignal(signal.SIGINT) is handler
    assert (tmp_path / "run" / "checkpoints" / "16").is_dir() and not (tmp_path / "run" / ".lock").exists()
    monkeypatch.setattr(loop.Loop, "_boundary", boundary)
    assert exp.train()["steps"] == 32
    steps = [r["step"] for r in exp.history()]
    assert steps == sorted(set(steps)) and steps[-1] == 32
