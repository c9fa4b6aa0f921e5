"""Attribution maps of an image classifier: input gradients, SmoothGrad, integrated gradients.

Each method explains the predicted class's logit for a fixed set of examples (the
first ``num_examples`` of the split), in pixels scaled to [0, 1] before the
dataset's normalisation. The maps go out as overlays (``saliency_<method>``); the
one metric, ``ig_completeness_error``, checks integrated gradients' completeness
axiom: attributions sum to logit(x) - logit(baseline), up to the integration error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research import images
from research.engine.api import Result, Schedule
from research.errors import ConfigError
from research.evaluators.adversarial import image_logits

METHODS = ("gradient", "smoothgrad", "integrated_gradients")
# score(x) -> (N,) the explained logit of each example, for images x in [0, 1]
ScoreFn = Callable[[jax.Array], jax.Array]


def gradient(score: ScoreFn, x: jax.Array) -> jax.Array:
    """d score / d x: each example's score depends on its own image only."""
    return jax.grad(lambda z: score(z).sum())(x)


def smoothgrad(score: ScoreFn, x: jax.Array, key: jax.Array, samples: int, noise: float) -> jax.Array:
    """The gradient averaged over Gaussian-noised copies of x (Smilkov et al. 2017)."""

    def one(i: int, total: jax.Array) -> jax.Array:
        z = x + noise * jax.random.normal(jax.random.fold_in(key, i), x.shape)
        return total + gradient(score, z)

    return jax.lax.fori_loop(0, samples, one, jnp.zeros_like(x)) / samples


def integrated_gradients(score: ScoreFn, x: jax.Array, baseline: jax.Array, steps: int) -> jax.Array:
    """(x - baseline) times the mean gradient on the straight path between them, by the midpoint
    rule (Sundararajan et al. 2017): the attributions sum to score(x) - score(baseline)."""

    def one(i: int, total: jax.Array) -> jax.Array:
        alpha = (i + 0.5) / steps
        return total + gradient(score, baseline + alpha * (x - baseline))

    return (x - baseline) * jax.lax.fori_loop(0, steps, one, jnp.zeros_like(x)) / steps


def overlay(x: np.ndarray, attribution: np.ndarray, min_size: int = 64) -> np.ndarray:
    """(N, H, W, C) images in [0, 1] with |attribution| (per example, normalised) in red, enlarged."""
    heat = np.abs(attribution).sum(-1, keepdims=True)
    heat = heat / np.maximum(heat.max(axis=(1, 2, 3), keepdims=True), 1e-12)
    base = np.repeat(x.mean(-1, keepdims=True), 3, -1) if x.shape[-1] != 3 else x
    red = np.array([1.0, 0.0, 0.0], np.float32)
    out = base * (1 - heat) + heat * red
    scale = max(1, min_size // out.shape[1])
    return out.repeat(scale, 1).repeat(scale, 2)


class Saliency:
    """Attribution overlays for the first examples of a split, and IG's completeness error."""

    needs_data = True

    def __init__(
        self,
        task: Any,
        dataset: Any,
        methods: Sequence[str],
        num_examples: int,
        smoothgrad_samples: int,
        smoothgrad_noise: float,
        ig_steps: int,
        seed: int,
        pixel_max: float,
        every: int = 0,
    ):
        self.logits = image_logits(task, dataset, "saliency")
        if not methods or not set(methods) <= set(METHODS):
            raise ConfigError(f"evaluators.saliency.methods={list(methods)}: choose among {list(METHODS)}")
        self.methods, self.num_examples = tuple(methods), int(num_examples)
        self.samples, self.noise = int(smoothgrad_samples), float(smoothgrad_noise)
        self.ig_steps, self.seed, self.pixel_max = int(ig_steps), int(seed), float(pixel_max)
        self.schedule = Schedule(every=every)
        self._program = None

    def metric_names(self) -> tuple[str, ...]:
        return ("ig_completeness_error",) if "integrated_gradients" in self.methods else ()

    def attributions(self, state: Any, raw: jax.Array) -> dict:
        """{"image": x in [0, 1], <method>: attributions, "ig_completeness_error": mean |gap|}."""
        x = raw.astype(jnp.float32) / self.pixel_max
        target = jnp.argmax(self.logits(state, raw), -1)

        def score(z: jax.Array) -> jax.Array:
            logits = self.logits(state, z * self.pixel_max).astype(jnp.float32)
            return jnp.take_along_axis(logits, target[:, None], -1)[:, 0]

        out = {"image": x}
        if "gradient" in self.methods:
            out["gradient"] = gradient(score, x)
        if "smoothgrad" in self.methods:
            out["smoothgrad"] = smoothgrad(score, x, jax.random.PRNGKey(self.seed), self.samples, self.noise)
        if "integrated_gradients" in self.methods:
            baseline = jnp.zeros_like(x)
            ig = integrated_gradients(score, x, baseline, self.ig_steps)
            gap = score(x) - score(baseline) - ig.reshape(len(x), -1).sum(-1)
            out["integrated_gradients"], out["ig_completeness_error"] = ig, jnp.abs(gap).mean()
        return out

    def program(self, ctx: Any) -> Any:
        if self._program is None:

            def run(state: Any, batches: dict, weights: jax.Array) -> dict:
                raw = batches["image"].reshape(-1, *batches["image"].shape[2:])[: self.num_examples]
                return ctx.per_replica(self.attributions, in_axes=(0, None))(state, raw)

            self._program = jax.jit(run)
        return self._program

    def prepare(self, ctx: Any, state: Any, data: tuple) -> None:
        ctx.submit(self.program(ctx), state, *data)

    def __call__(self, ctx: Any, state: Any, data: tuple) -> Result:
        out = jax.device_get(ctx.run(self.program(ctx), state, *data))
        metrics = {k: out.pop(k) for k in self.metric_names()}
        if not ctx.final:
            return Result(metrics)
        first = {k: np.asarray(v[0] if ctx.vmapped else v) for k, v in out.items()}  # the first seed's maps
        shown = {m: images.grid(overlay(first["image"], first[m])) for m in self.methods}
        return Result(metrics, {f"saliency_{m}": image for m, image in shown.items()})
