"""Frechet distance of generated images, in the features of a classifier this framework trained.

FID (Heusel et al. 2017) fits a Gaussian to Inception-v3 features of real and of generated
images and reports the Frechet distance between the two. Inception weights cannot be
downloaded here, so the features are those of a classifier trained by this framework on
the same data: a saved run of a classifier recipe (``classifier_run=runs/fashion_mnist_cnn/...``),
its penultimate layer where the model has a ``features`` method (research/models/cnn.py),
its logits otherwise (a coarser, class-sized space). The numbers therefore rank generators
of one dataset against each other and are not comparable with published FIDs.

Each evaluation compares ``n`` samples of the generator (``task.sample_images``, pixels in
[0, 1]; fixed noise, so successive evaluations differ only by the generator) with ``n`` real
images of the evaluated split (val during training, test at the end), where ``n`` is
``num_samples`` capped at half the split. At the end it also reports, once, the distance
between two disjoint ``n``-image halves of the split: the floor a perfect generator would
reach at this ``n`` (the estimate is biased upward for finite samples).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from research.engine.api import HasEvalModel, ImageSampler, Result, Schedule
from research.errors import ConfigError

NAMES = ("frechet_distance", "frechet_floor")


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, F) features, in float64."""
    x = np.asarray(features, np.float64)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussians.

    tr((S_a S_b)^(1/2)) is computed as tr((R S_b R)^(1/2)) with R = S_a^(1/2): the same
    eigenvalues, but of a symmetric matrix, so two ``eigh`` calls replace ``sqrtm`` and no
    complex round-off appears for singular covariances (fewer samples than features).
    """
    root = _sqrt_psd(cov_a)
    middle = root @ cov_b @ root
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = np.asarray(mean_a, np.float64) - np.asarray(mean_b, np.float64)
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def feature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two (N, F) feature sets."""
    return frechet_distance(*gaussian(a), *gaussian(b))


@dataclasses.dataclass
class Classifier:
    """A restored classifier as a feature map of images in [0, 1]."""

    features: Callable[[Any, jax.Array], jax.Array]  # (state, images (B, H, W, C) in [0, 1]) -> (B, F)
    state: Any
    input_shape: tuple[int, ...]
    space: str  # "penultimate" or "logits": which layer the features are


def load_classifier(run: str | None, checkpoint: str, open_run: Callable) -> Classifier:
    """The classifier of the saved run ``run`` (its ``checkpoint``: best, latest or a step), opened
    read-only by ``open_run`` (``research.experiment.open_saved``).
    """
    run_dir = Path(run or "").expanduser()
    if not run or not run_dir.is_dir():
        raise ConfigError(
            f"evaluators.frechet.classifier_run={run!r} must be the run directory of a classifier trained "
            "on the same data (e.g. python -m research.train +experiment=fashion_mnist_cnn)"
        )

    def check(cfg: Any, built: Any) -> None:
        data = built.dataset
        if not isinstance(built.task, HasEvalModel) or data is None or not data.num_classes:
            raise ConfigError(f"evaluators.frechet.classifier_run={run} did not train an image classifier")

    opened = open_run(run_dir, checkpoint=checkpoint, replica=0, check=check)  # several seeds: the first's
    task, data, state = opened.built.task, opened.built.dataset, opened.state
    pixel_max, transform = float(opened.cfg.data.pixel_max), data.transform
    space = "penultimate" if hasattr(task.eval_model(state), "features") else "logits"

    def features(state: Any, images: jax.Array) -> jax.Array:
        x = transform(jax.random.PRNGKey(0), {"image": images * pixel_max}, False)["image"]
        model = task.eval_model(state)
        return model.features(x) if space == "penultimate" else model(x)

    return Classifier(features, state, tuple(data.input_shape), space)


class Frechet:
    """``frechet_distance`` of the generator's samples to the split; ``frechet_floor`` once, at the end."""

    needs_data = True

    def __init__(
        self,
        task: Any,
        dataset: Any,
        classifier_run: str | None = None,
        checkpoint: str = "best",
        num_samples: int = 2000,
        batch_size: int = 500,
        seed: int = 0,
        every: int | None = None,
        *,
        open_run: Callable,
    ):
        """``open_run`` opens ``classifier_run`` read-only; the build step passes it in."""
        if not isinstance(task, ImageSampler) or dataset is None:
            raise ConfigError(
                f"evaluators.frechet needs an image generator (task=gan or task=vae); {type(task).__name__} "
                "has no sample_images: remove +evaluators=frechet"
            )
        if num_samples < 2 or batch_size < 1:
            raise ConfigError(f"evaluators.frechet.num_samples={num_samples} must be >= 2, batch_size >= 1")
        self.classifier = load_classifier(classifier_run, str(checkpoint), open_run)
        if self.classifier.input_shape != tuple(dataset.input_shape):
            raise ConfigError(
                f"evaluators.frechet.classifier_run was trained on {self.classifier.input_shape} images, "
                f"this run's are {tuple(dataset.input_shape)}: train the classifier on the same data"
            )
        self.task, self.dataset = task, dataset
        self.count, self.batch, self.seed = int(num_samples), int(batch_size), int(seed)
        self.schedule = Schedule(every=every)
        self._fake_program: Any = None
        self._real: list[tuple[Any, np.ndarray]] = []  # (split data, its real features), per split seen

    def metric_names(self) -> tuple[str, ...]:
        return NAMES

    def fake_features(self, state: Any, classifier_state: Any) -> jax.Array:
        """Features of ``num_samples`` samples from fixed noise, drawn ``batch_size`` at a time."""
        chunks = -(-self.count // self.batch)
        keys = jax.random.split(jax.random.PRNGKey(self.seed), chunks)

        def chunk(key: jax.Array) -> jax.Array:
            images = self.task.sample_images(state, key, self.batch)
            return self.classifier.features(classifier_state, images)

        out = jax.lax.map(chunk, keys)
        return out.reshape(-1, out.shape[-1])[: self.count]

    def real_features(self, data: tuple) -> np.ndarray:
        """Features of the split's real images (padding dropped), computed once per split."""
        for seen, features in self._real:
            if seen is data:
                return features
        batches, weights = data
        transform, classify = self.dataset.transform, self.classifier.features

        def rows(images: jax.Array) -> jax.Array:
            # raw pixels -> [0, 1]: generator recipes normalise with mean 0, std 1, as their samples are
            pixels = transform(jax.random.PRNGKey(0), {"image": images}, False)["image"]
            return classify(self.classifier.state, pixels)

        out = jax.device_get(jax.jit(lambda b: jax.lax.map(rows, b))(batches["image"]))
        keep = np.asarray(jax.device_get(weights)).reshape(-1) > 0
        features = np.asarray(out).reshape(-1, out.shape[-1])[keep]
        self._real.append((data, features))
        return features

    def program(self, ctx: Any) -> Any:
        if self._fake_program is None:
            self._fake_program = jax.jit(ctx.per_replica(self.fake_features, in_axes=(0, None)))
        return self._fake_program

    def prepare(self, ctx: Any, state: Any, data: tuple) -> None:
        ctx.submit(self.program(ctx), state, self.classifier.state)

    def __call__(self, ctx: Any, state: Any, data: tuple) -> Result:
        real = self.real_features(data)
        n = min(self.count, len(real) // 2)
        if n < 2:
            raise ConfigError(f"evaluators.frechet needs 4 or more real images in a split, got {len(real)}")
        order = np.random.default_rng(self.seed).permutation(len(real))
        half, other = real[order[:n]], real[order[n : 2 * n]]
        fake = np.asarray(jax.device_get(ctx.run(self.program(ctx), state, self.classifier.state)))
        reference = gaussian(half)
        if ctx.vmapped:
            distance = np.array([frechet_distance(*gaussian(f[:n]), *reference) for f in fake])
        else:
            distance = np.float64(frechet_distance(*gaussian(fake[:n]), *reference))
        metrics = {"frechet_distance": distance}
        if ctx.final:
            floor = frechet_distance(*gaussian(other), *reference)
            metrics["frechet_floor"] = np.full_like(distance, floor)
        return Result(metrics)
