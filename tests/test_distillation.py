"""task=distillation on digits: Hinton's loss by hand, a teacher left as it was, bad teachers as one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import research
from research import ema, experiment
from research.config import compose_train
from research.errors import ConfigError
from research.tasks.distillation import TEACHER, TEACHER_LOGITS
from tests.conftest import TINY, run_train

SMALL = ["model.channels=[4,8]", "model.dense_sizes=[16]", "trainer.plots=false", *TINY]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits CNN trained for a few steps, with a weight average: the teacher of every test here."""
    run_dir = tmp_path_factory.mktemp("distillation") / "teacher"
    overrides = [*SMALL, "trainer.max_steps=20", "trainer.eval_every=20", "optimizer.ema.decay=0.9"]
    research.Experiment("digits_cnn", overrides=overrides, run_dir=run_dir).train()
    return run_dir


def student(teacher: Path, *overrides: str) -> list[str]:
    """A digits CNN distilled from ``teacher``: the overrides after ``+experiment=digits_cnn``."""
    return ["task=distillation", f"task.teacher.run={teacher}", *SMALL, *overrides]


def build(*overrides: str) -> experiment.Built:
    return experiment.build(compose_train(["+experiment=digits_cnn", *overrides]))


def test_loss_is_hintons_formula(teacher: Path) -> None:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE, against numpy on given logits."""
    alpha, temperature = 0.7, 3.0
    task = build(*student(teacher, f"task.alpha={alpha}", f"task.temperature={temperature}")).task
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    labels = np.array([0, 3, 9, 1, 1])

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    p, log_q = np.exp(log_softmax(t / temperature)), log_softmax(s / temperature)
    kl = (p * (np.log(p) - log_q)).sum(-1)
    ce = -log_softmax(s)[np.arange(5), labels]
    expected = np.mean(alpha * temperature**2 * kl + (1 - alpha) * ce)

    batch = {"image": np.zeros((5, 8, 8, 1)), "label": labels, TEACHER_LOGITS: t.astype(np.float32)}
    loss, metrics = task.objective(lambda _: s.astype(np.float32), batch)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), kl.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["ce"]), ce.mean(), rtol=1e-5)


def test_teacher_is_unchanged_by_training(teacher: Path, tmp_path: Path) -> None:
    """Two students in one program learn from the teacher's weight average (what its own evaluation
    used); its variables ride in the state untouched, out of the optimizer; its run is only read."""
    files_before = {p: p.stat().st_mtime_ns for p in teacher.rglob("*") if p.is_file()}
    taught = research.Experiment.open(teacher).state  # the average in front, the raw weights in opt_state
    raw = ema.find(taught["opt_state"]).ema
    differs = jax.tree.map(lambda a, b: bool((np.asarray(a) != np.asarray(b)).any()), raw, taught["params"])
    assert any(jax.tree.leaves(differs))  # the average is not the raw weights: which one is taught shows
    overrides = student(teacher, "trainer.max_steps=10", "trainer.eval_every=10", "trainer.num_seeds=2")
    run = research.Experiment("digits_cnn", overrides=overrides, run_dir=tmp_path / "student")
    summary = run.train()
    assert summary["steps"] == 10 and np.isfinite(summary["test/accuracy"])
    opened = experiment.open_saved(run.run_dir, checkpoint="latest")
    state = opened.state
    for key in ("params", "model_state"):  # model_state: batch statistics and dropout's RNG stream
        for replica in range(2):
            jax.tree.map(
                lambda a, b, r=replica: np.testing.assert_array_equal(_host(a)[r], _host(b)),
                state[TEACHER][key],
                taught[key],
            )
    fresh = opened.built.task.init(jax.random.PRNGKey(0), None)
    optimizer_leaves = len(jax.tree.leaves(opened.built.task.tx.init(fresh["params"])))
    assert len(jax.tree.leaves(state["opt_state"])) == optimizer_leaves  # no teacher variable in it
    assert {p: p.stat().st_mtime_ns for p in teacher.rglob("*") if p.is_file()} == files_before


def _host(a: jax.Array) -> np.ndarray:
    return np.asarray(jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a)


def _copy_without_checkpoints(teacher: Path, where: Path) -> Path:
    shutil.copytree(teacher, where, ignore=shutil.ignore_patterns("checkpoints"))
    return where


@pytest.mark.parametrize(
    "overrides, line",
    [
        (["task.alpha=1.5"], "task.alpha=1.5 must lie in [0, 1]"),
        (["task.temperature=0"], "task.temperature=0 must be > 0"),
        (
            ["data.classes=[0,1,2,3,4]"],
            "of 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9); this run's are (8, 8, 1) images of 5",
        ),
        (["task.teacher.run={tmp}/none"], "is not a run directory"),
        (["task.teacher.run={tmp}/bare"], "has no checkpoint to read"),
    ],
    ids=["alpha", "temperature", "classes", "missing", "no-checkpoint"],
)
def test_bad_settings_or_teacher_is_one_line(
    teacher: Path, tmp_path: Path, overrides: list[str], line: str
) -> None:
    _copy_without_checkpoints(teacher, tmp_path / "bare")
    with pytest.raises(ConfigError) as raised:
        build(*student(teacher, *(o.format(tmp=tmp_path) for o in overrides)))
    assert line in str(raised.value) and "\n" not in str(raised.value)
    assert str(raised.value).startswith(("task.alpha", "task.temperature", "task.teacher.run"))


def test_teacher_of_other_images_stops_the_cli_before_a_run_dir(teacher: Path, tmp_path: Path) -> None:
    """A digits teacher for a Fashion-MNIST student: exit 2, one line, nothing created."""
    run_dir = tmp_path / "student"
    overrides = ["+experiment=digits_cnn", *student(teacher, "data=fashion_mnist")]
    proc = run_train(*overrides, f"hydra.run.dir={run_dir}", check=False, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and "was trained on (8, 8, 1) images" in error[0], proc.stderr
    assert "this run's are (28, 28, 1) images" in error[0]
    assert not run_dir.exists()
