"""Adversarial training (Madry et al. 2018): each training batch is replaced by its PGD attack.

The classification task unchanged, except that ``train_step`` first moves every image
to the worst point of its L-infinity ball (``research.evaluators.adversarial.pgd``,
pixels in [0, 1] before normalisation) and then takes the ordinary step there. The attack
uses the eval-mode model, so it neither drops units nor moves batch-norm statistics.
Evaluation is the plain task's (clean accuracy); add ``+evaluators=adversarial`` for
robust accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from research.errors import ConfigError
from research.evaluators.adversarial import pgd
from research.tasks.base import Batch, Metrics, State
from research.tasks.classification import ClassificationTask

KEYS = ("epsilon", "step_size", "steps", "random_start", "pixel_max")


class AdversarialClassificationTask(ClassificationTask):
    """``ClassificationTask`` trained on PGD examples: ``adversarial`` holds the attack's settings."""

    def __init__(self, *args: Any, adversarial: Mapping[str, Any], **kwargs: Any):
        super().__init__(*args, **kwargs)
        if set(adversarial) != set(KEYS):
            raise ConfigError(
                f"task.adversarial needs exactly the keys {list(KEYS)}, got {sorted(adversarial)}"
            )
        if not adversarial["epsilon"] > 0 or not int(adversarial["steps"]) > 0:
            raise ConfigError(
                f"task.adversarial.epsilon and .steps must be positive, got {dict(adversarial)}"
            )
        self.attack = dict(adversarial)

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        a = self.attack
        labels = self.dataset.transform(state["rng"], batch, False)["label"]  # renumbered with data.classes
        x = batch["image"].astype(jnp.float32) / a["pixel_max"]

        def grad_fn(z: jax.Array) -> jax.Array:
            def loss(v: jax.Array) -> jax.Array:
                logits = self.logits(state, v * a["pixel_max"]).astype(jnp.float32)
                return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()

            return jax.grad(loss)(z)

        key = jax.random.fold_in(
            jax.random.fold_in(state["rng"], state["step"]), 1
        )  # apart from augmentation's
        start = jax.random.uniform(key, x.shape, minval=-1.0, maxval=1.0) if a["random_start"] else None
        adv = pgd(grad_fn, x, a["epsilon"], a["step_size"], int(a["steps"]), start)
        adv = jax.lax.stop_gradient(adv) * a["pixel_max"]
        return super().train_step(state, {**batch, "image": adv})
