"""Adversarial robustness: a classifier's accuracy under L-infinity FGSM and PGD attacks.

Attacks work on pixels scaled to [0, 1] (raw / pixel_max), before the dataset's own
normalisation, so an epsilon means the same on every dataset; adversarial images are
clipped to [0, 1]. The task supplies ``logits(state, raw_images)`` (transform included),
which is differentiable in the images. One compiled scan over the split (``Sums``)
counts correct predictions clean and per (attack, epsilon).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import images
from research.data.base import EVAL_WEIGHT
from research.engine.api import Schedule
from research.errors import ConfigError
from research.evaluators.sums import Sums

ATTACKS = ("fgsm", "pgd")
# grad_fn(x) -> d loss / d x, for images x in [0, 1]
GradFn = Callable[[jax.Array], jax.Array]


def image_logits(task: Any, dataset: Any, key: str) -> Callable:
    """The task's ``logits(state, images)``, or one line saying this evaluator does not apply."""
    if not callable(getattr(task, "logits", None)) or dataset is None or dataset.num_classes is None:
        raise ConfigError(
            f"evaluators.{key} needs an image classifier (a task with logits(state, images) and labelled "
            f"data); {type(task).__name__} has none: remove +evaluators={key}"
        )
    return task.logits


def fgsm(grad_fn: GradFn, x: jax.Array, epsilon: float) -> jax.Array:
    """One step of ``epsilon`` along the gradient's sign (Goodfellow et al. 2015), clipped to [0, 1]."""
    return jnp.clip(x + epsilon * jnp.sign(grad_fn(x)), 0.0, 1.0)


def pgd(
    grad_fn: GradFn, x: jax.Array, epsilon: float, step_size: float, steps: int, start: jax.Array | None
) -> jax.Array:
    """``steps`` signed-gradient steps, each projected back onto the epsilon ball and [0, 1]
    (Madry et al. 2018); ``start`` is a uniform draw in [-1, 1] scaled by epsilon, or None."""

    def project(z: jax.Array) -> jax.Array:
        return jnp.clip(x + jnp.clip(z - x, -epsilon, epsilon), 0.0, 1.0)

    def body(_: int, z: jax.Array) -> jax.Array:
        return project(z + step_size * epsilon * jnp.sign(grad_fn(z)))

    z = x if start is None else project(x + epsilon * start)
    return jax.lax.fori_loop(0, steps, body, z)


def metric_key(attack: str, epsilon: float) -> str:
    return f"{attack}_accuracy_eps{epsilon:g}"


class Adversarial(Sums):
    """Clean and adversarial accuracy per epsilon on a split, and the accuracy-vs-epsilon curve."""

    def __init__(
        self,
        task: Any,
        dataset: Any,
        attacks: Sequence[str],
        epsilons: Sequence[float],
        pgd_steps: int,
        step_size: float,
        random_start: bool,
        seed: int,
        pixel_max: float,
        every: int = 0,
    ):
        self.logits = image_logits(task, dataset, "adversarial")
        unknown = sorted(set(attacks) - set(ATTACKS))
        if unknown or not attacks:
            raise ConfigError(f"evaluators.adversarial.attacks={list(attacks)}: choose among {list(ATTACKS)}")
        if not epsilons or min(epsilons) <= 0:
            raise ConfigError(f"evaluators.adversarial.epsilons={list(epsilons)} must be positive numbers")
        self.attacks, self.epsilons = tuple(attacks), tuple(float(e) for e in epsilons)
        self.pgd_steps, self.step_size, self.random_start = (
            int(pgd_steps),
            float(step_size),
            bool(random_start),
        )
        self.seed, self.pixel_max, self.dataset = int(seed), float(pixel_max), dataset
        names = ("clean_accuracy", *(metric_key(a, e) for a in self.attacks for e in self.epsilons))
        super().__init__(self.attack_sums, self.accuracies, names, Schedule(every=every), self.curve)

    def attack_sums(self, state: Any, batch: dict) -> dict:
        """Weighted counts of correct predictions: clean, and under each attack and epsilon."""
        labels = self.dataset.transform(state["rng"], batch, False)["label"]  # renumbered with data.classes
        weight = batch[EVAL_WEIGHT]
        x = batch["image"].astype(jnp.float32) / self.pixel_max

        def loss(z: jax.Array) -> jax.Array:
            logits = self.logits(state, z * self.pixel_max).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()

        def correct(z: jax.Array) -> jax.Array:
            return jnp.sum(weight * (jnp.argmax(self.logits(state, z * self.pixel_max), -1) == labels))

        grad_fn = jax.grad(loss)
        sums = {"count": weight.sum(), "clean_accuracy": correct(x)}
        for i, epsilon in enumerate(self.epsilons):
            if "fgsm" in self.attacks:
                sums[metric_key("fgsm", epsilon)] = correct(fgsm(grad_fn, x, epsilon))
            if "pgd" in self.attacks:
                key = jax.random.fold_in(jax.random.PRNGKey(self.seed), i)
                start = (
                    jax.random.uniform(key, x.shape, minval=-1.0, maxval=1.0) if self.random_start else None
                )
                adv = pgd(grad_fn, x, epsilon, self.step_size, self.pgd_steps, start)
                sums[metric_key("pgd", epsilon)] = correct(adv)
        return sums

    def accuracies(self, sums: dict) -> dict:
        count = jnp.maximum(sums["count"], 1.0)
        return {k: v / count for k, v in sums.items() if k != "count"}

    def curve(self, metrics: dict) -> dict:
        """Accuracy against epsilon, one line per attack, starting from the clean accuracy."""
        plt = images.pyplot()
        fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
        clean = float(np.mean(metrics["clean_accuracy"]))  # several seeds: their mean
        for attack in self.attacks:
            accuracy = [clean, *(float(np.mean(metrics[metric_key(attack, e)])) for e in self.epsilons)]
            ax.plot([0.0, *self.epsilons], accuracy, marker="o", label=attack)
        ax.set_xlabel("epsilon (L-infinity, pixels in [0, 1])")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title(f"{self.dataset.name}: adversarial accuracy")
        fig.tight_layout()
        return {"adversarial_curve": images.figure_array(fig)}
