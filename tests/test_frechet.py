"""Frechet distance: the formula against closed forms, the CNN's features, the evaluator through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.evaluators.frechet import feature_distance, frechet_distance
from research.models.cnn import CNN
from tests.conftest import TINY, run_train


def test_identical_feature_sets_are_at_distance_zero() -> None:
    a = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(feature_distance(a, a)) < 1e-8


def test_a_mean_shift_adds_its_squared_length() -> None:
    """Same samples shifted by delta: equal covariances, so the distance is exactly |delta|^2."""
    a = np.random.default_rng(1).normal(size=(400, 8))
    for scale in (0.5, 1.0, 3.0):
        delta = scale * np.linspace(-1.0, 1.0, 8)
        assert feature_distance(a, a + delta) == pytest.approx(float(delta @ delta), rel=1e-6)


def test_gaussians_with_diagonal_covariances_match_the_closed_form() -> None:
    """N(m1, diag s1^2) vs N(m2, diag s2^2): |m1 - m2|^2 + sum (s1 - s2)^2."""
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    expected = np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(m1, np.diag(s1**2), m2, np.diag(s2**2)) == pytest.approx(expected, rel=1e-12)


def test_non_commuting_covariances_match_scipy_sqrtm() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    cov_a, cov_b = x @ x.T, y @ y.T + np.eye(6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-8)


def test_samples_of_shifted_gaussians_grow_with_the_shift() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(4000, 4))
    distances = [feature_distance(real, rng.normal(size=(4000, 4)) + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances)
    assert distances[-1] == pytest.approx(4 * 2.0**2, rel=0.05)  # |delta|^2 = 16, up to sampling noise


def test_cnn_features_are_what_its_head_reads() -> None:
    model = CNN((8, 8, 1), 10, channels=[4], dense_sizes=[12], rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))
    features = model.features(x)
    assert features.shape == (3, 12)
    np.testing.assert_allclose(model.head(features), model(x), rtol=1e-6)
    assert float(jnp.min(features)) >= 0.0  # after the relu: the penultimate layer, not the logits


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny saved digits classifier: the feature space of the evaluator."""
    run_dir = tmp_path_factory.mktemp("classifier") / "run"
    run_train("+experiment=digits_cnn", "+debug=fast", *TINY, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.mark.parametrize("recipe", ["digits_dcgan", "digits_vae"])
def test_the_evaluator_runs_on_the_eval_schedule_and_reports_the_floor_at_the_end(
    recipe: str, classifier_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_train(
        f"+experiment={recipe}", "+debug=fast", *TINY, "+evaluators=frechet",
        f"evaluators.frechet.classifier_run={classifier_run}",
        "evaluators.frechet.num_samples=64", "evaluators.frechet.batch_size=32",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    during = [r for r in _records(run_dir) if "val/frechet_distance" in r]
    assert [r["step"] for r in during] == [4, 8]  # every trainer.eval_every (4 in +debug=fast)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test/frechet_floor"] < summary["test/frechet_distance"]  # 8 steps: far from real
    assert not any("frechet_floor" in r for r in during)  # the floor is reported once, at the end


def test_a_missing_classifier_run_is_one_line(tmp_path: Path) -> None:
    proc = run_train(
        "+experiment=digits_dcgan", "+debug=fast", *TINY, "+evaluators=frechet",
        f"hydra.run.dir={tmp_path / 'run'}", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert "evaluators.frechet.classifier_run=None must be the run directory" in lines[-1], proc.stderr
