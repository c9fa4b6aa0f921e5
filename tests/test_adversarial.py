"""Adversarial evaluators: FGSM's closed form, PGD's projection, and robust accuracy of a trained model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.errors import ConfigError
from research.evaluators.adversarial import Adversarial, fgsm, pgd
from research.evaluators.per_class import PerClass, per_class
from tests.conftest import ROOT, TINY, run_train

SETTINGS = {
    "attacks": ["fgsm", "pgd"],
    "epsilons": [0.05, 0.1, 0.2],
    "pgd_steps": 10,
    "step_size": 0.25,
    "random_start": True,
    "seed": 0,
    "pixel_max": 16,
}


def test_fgsm_on_a_linear_model_is_the_closed_form() -> None:
    kx, kw, kb = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.uniform(kx, (6, 12))
    w, b = jax.random.normal(kw, (12, 4)), jax.random.normal(kb, (4,))
    labels = jnp.array([0, 1, 2, 3, 0, 1])

    def grad_fn(z):
        return jax.grad(lambda v: optax.softmax_cross_entropy_with_integer_labels(v @ w + b, labels).sum())(z)

    # d CE / d x = (softmax(xW + b) - onehot(y)) W^T
    direction = (jax.nn.softmax(x @ w + b) - jax.nn.one_hot(labels, 4)) @ w.T
    expected = np.clip(x + 0.1 * np.sign(direction), 0, 1)
    np.testing.assert_allclose(fgsm(grad_fn, x, 0.1), expected, atol=1e-6)


def test_pgd_stays_in_the_epsilon_ball_and_the_pixel_range() -> None:
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 8))
    start = jax.random.uniform(jax.random.PRNGKey(2), x.shape, minval=-1, maxval=1)
    adv = pgd(lambda z: jnp.ones_like(z), x, 0.1, 0.25, 10, start)  # pushes every pixel up 2.5 epsilon
    assert float(jnp.max(jnp.abs(adv - x))) <= 0.1 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    np.testing.assert_allclose(adv, np.minimum(x + 0.1, 1.0), atol=1e-6)


def test_a_task_without_logits_fails_with_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        Adversarial(task=object(), dataset=None, **SETTINGS)
    assert str(err.value).startswith("evaluators.adversarial needs an image classifier") and "\n" not in str(
        err.value
    )


def train_mlp(run_dir: Path, *overrides: str) -> Path:
    run_train(
        "+experiment=digits_mlp",
        "trainer.max_steps=100",
        "trainer.eval_every=100",
        *TINY,
        f"hydra.run.dir={run_dir}",
        *overrides,
    )
    return run_dir


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_mlp(tmp_path_factory.mktemp("adv") / "run")


def evaluate_robustness(run_dir: Path) -> dict:
    """The run's best checkpoint on test, with the adversarial and per_class evaluators added."""
    from research.evaluate import write_images
    from research.experiment import open_saved

    opened = open_saved(run_dir)
    task, dataset = opened.built.task, opened.built.dataset
    evaluators = {
        **task.evaluators(),
        "adversarial": Adversarial(task=task, dataset=dataset, **SETTINGS),
        "per_class": PerClass(task=task, dataset=dataset, every=0),
    }
    outcome = opened.saved.evaluate(opened.state, opened.step, evaluators, "test")
    write_images(run_dir, outcome.images)
    return {**outcome.scalars, **outcome.arrays}


def test_pgd_accuracy_is_at_most_fgsm_accuracy_at_most_clean(mlp_run: Path) -> None:
    out = evaluate_robustness(mlp_run)
    assert out["test/clean_accuracy"] == pytest.approx(out["test/accuracy"], abs=1e-6)
    assert out["test/accuracy"] > 0.8
    for eps in SETTINGS["epsilons"]:
        pgd_acc, fgsm_acc = out[f"test/pgd_accuracy_eps{eps:g}"], out[f"test/fgsm_accuracy_eps{eps:g}"]
        assert pgd_acc <= fgsm_acc <= out["test/clean_accuracy"]
    assert out["test/pgd_accuracy_eps0.2"] < out["test/pgd_accuracy_eps0.05"]
    assert (mlp_run / "plots" / "eval" / "test_adversarial_curve.png").stat().st_size > 1000
    # per_class: the task's macro means are the means of the per-class scores
    for name in ("precision", "recall", "f1"):
        assert np.mean(out[f"test/per_class_{name}"]) == pytest.approx(out[f"test/{name}"], abs=1e-4)
    assert np.array_equal(out["test/per_class_support"], np.sum(out["test/confusion_matrix"], axis=1))
    assert (mlp_run / "plots" / "eval" / "test_per_class.png").stat().st_size > 1000


@pytest.mark.slow
def test_adversarial_training_raises_robust_accuracy(mlp_run: Path, tmp_path: Path) -> None:
    robust = train_mlp(tmp_path / "robust", "task=adversarial_classification")
    plain, hardened = evaluate_robustness(mlp_run), evaluate_robustness(robust)
    assert hardened["test/pgd_accuracy_eps0.1"] > plain["test/pgd_accuracy_eps0.1"] + 0.05
    assert hardened["test/clean_accuracy"] > 0.8


def test_per_class_scores_of_a_known_confusion_matrix() -> None:
    scores = per_class(jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(scores["per_class_precision"], [1.0, 2 / 3, 0.0], atol=1e-6)
    np.testing.assert_allclose(scores["per_class_recall"], [0.75, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(scores["per_class_f1"], [6 / 7, 4 / 7, 0.0], atol=1e-6)


@pytest.mark.slow
def test_evaluate_cli_adds_the_adversarial_and_saliency_evaluators(mlp_run: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "research.evaluate", f"run={mlp_run}", "+evaluators=[adversarial,saliency]"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((mlp_run / "eval.json").read_text())
    assert "test/pgd_accuracy_eps0.1" in out and out["test/ig_completeness_error"] < 0.05
    assert (mlp_run / "plots" / "eval" / "test_saliency_integrated_gradients.png").exists()


def test_an_unknown_evaluator_config_names_the_choices(mlp_run: Path) -> None:
    from research.config import load_run_config

    with pytest.raises(ConfigError) as err:
        load_run_config(mlp_run, ["+evaluators=nope"])
    message = str(err.value)
    assert message.startswith("evaluators=nope: choose among [") and "\n" not in message
    assert all(f"'{name}'" in message for name in ("adversarial", "per_class", "saliency"))
