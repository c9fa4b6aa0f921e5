"""A linear probe: logistic regression on frozen features, trained and scored in one program.

The representation-learning metric (SimCLR's): ``features(state, images)`` of a fixed
set of training images is fitted by L2-regularised softmax regression (L-BFGS, ``steps``
iterations, inside one jitted function), then the probe's accuracy is measured on the
evaluated split. At the final evaluation the same probe on ``baselines`` (e.g. a
randomly initialised encoder, raw pixels) is reported once, for comparison.

Labels are the task's, not the records': ``labels(raw batch)`` maps the evaluated split's
stored labels as the dataset's transform does (``data.classes`` keeps some classes and
renumbers them 0..k-1), and the fixed training set is given already mapped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from research.engine.api import Result, Schedule

FeaturesFn = Callable[[Any, jax.Array], jax.Array]  # (state, images (B, ...)) -> (B, F)
LabelsFn = Callable[[dict], jax.Array]  # raw {"image", "label"} batch -> the task's labels 0..k-1


def fit_and_score(
    train_x: jax.Array, train_y: jax.Array, test_x: jax.Array, test_y: jax.Array, weight: jax.Array,
    num_classes: int, steps: int, l2: float,
) -> jax.Array:  # fmt: skip
    """Accuracy on (test_x, test_y) weighted by ``weight`` of L2-regularised softmax regression
    fitted to the train set by ``steps`` L-BFGS iterations (the logistic regression of the
    published baselines, fitted to convergence: no learning rate to tune per encoder).

    Features are standardised with the train statistics, so one ``l2`` suits any encoder.
    """
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    params = {"w": jnp.zeros((train_x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}

    def loss(p: dict) -> jax.Array:
        logits = train_x @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()
        return ce + 0.5 * l2 * jnp.sum(p["w"] ** 2)

    tx = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def update(_: int, carry: tuple) -> tuple:
        p, opt = carry
        value, grad = value_and_grad(p, state=opt)
        updates, opt = tx.update(grad, opt, p, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(p, updates), opt

    params, _ = jax.lax.fori_loop(0, steps, update, (params, tx.init(params)))
    correct = jnp.argmax(test_x @ params["w"] + params["b"], -1) == test_y
    return jnp.sum(correct * weight) / jnp.maximum(weight.sum(), 1.0)


def featurize_in_chunks(
    featurize: Callable[[jax.Array], jax.Array], images: jax.Array, chunk: int
) -> jax.Array:
    """``featurize`` over ``images`` ``chunk`` at a time (zero-padded to a whole number of chunks):
    the probe's training set may be the whole train split, too large for one forward pass."""
    n = images.shape[0]
    padded = jnp.concatenate([images, jnp.zeros((-n % chunk, *images.shape[1:]), images.dtype)])
    features = jax.lax.map(featurize, padded.reshape(-1, chunk, *images.shape[1:]))
    return features.reshape(-1, features.shape[-1])[:n]


class LinearProbe:
    """``probe_accuracy`` of ``features`` on the split; ``<name>_probe_accuracy`` of each baseline once."""

    needs_data = True

    def __init__(
        self,
        features: FeaturesFn,
        train_images: jax.Array,
        train_labels: jax.Array,
        num_classes: int,
        steps: int,
        l2: float,
        baselines: Mapping[str, Callable[[jax.Array], jax.Array]] = (),
        schedule: Schedule | None = None,
        labels: LabelsFn | None = None,
    ):
        self.features, self.baselines = features, dict(baselines)
        self.labels = labels or (lambda batch: batch["label"])
        self.train = (train_images, train_labels)
        self.fit = lambda *a: fit_and_score(*a, num_classes=num_classes, steps=steps, l2=l2)
        self.schedule = schedule or Schedule()
        self._programs: dict[str, Any] = {}

    def metric_names(self) -> tuple[str, ...]:
        return ("probe_accuracy", *(f"{n}_probe_accuracy" for n in self.baselines))

    def _probe(
        self,
        featurize: Callable[[jax.Array], jax.Array],
        batches: dict,
        weights: jax.Array,
        train: tuple[jax.Array, jax.Array],
    ) -> jax.Array:
        images = batches["image"].reshape(-1, *batches["image"].shape[2:])
        labels = self.labels({"image": images, "label": batches["label"].reshape(-1)})
        chunk = batches["image"].shape[1]  # one evaluation batch's forward pass at a time
        evaluated, fitted = (featurize_in_chunks(featurize, x, chunk) for x in (images, train[0]))
        return self.fit(fitted, train[1], evaluated, labels, weights.reshape(-1))

    def program(self, ctx: Any, name: str) -> Any:
        """The probe's program; its training set is an argument, not a constant baked into it
        (XLA would fold a 10,000-image constant through the encoder's first layers at compile).
        """
        if name not in self._programs:
            if name == "probe":
                fn = ctx.per_replica(
                    lambda s, b, w, t: self._probe(lambda x: self.features(s, x), b, w, t),
                    in_axes=(0, None, None, None),
                )
            else:
                fn = lambda s, b, w, t: self._probe(self.baselines[name], b, w, t)  # noqa: E731
            self._programs[name] = jax.jit(fn)
        return self._programs[name]

    def prepare(self, ctx: Any, state: Any, data: tuple) -> None:
        ctx.submit(self.program(ctx, "probe"), state, *data, self.train)

    def __call__(self, ctx: Any, state: Any, data: tuple) -> Result:
        probe = ctx.run(self.program(ctx, "probe"), state, *data, self.train)
        metrics = {"probe_accuracy": jax.device_get(probe)}
        if ctx.final:
            for name in self.baselines:
                metrics[f"{name}_probe_accuracy"] = jax.device_get(
                    self.program(ctx, name)(None, *data, self.train)
                )
        return Result(metrics)
