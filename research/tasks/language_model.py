"""Next-token language modelling on windows ``tokens`` (B, context + 1).

The model reads ``tokens[:, :-1]`` and is scored on ``tokens[:, 1:]``: cross-entropy in
nats per token (``loss``), ``bits_per_token`` = loss / ln 2 (bits per character on the
character corpora, the unit of the char-LM literature) and ``perplexity`` = e^loss. Eval
sums are weighted per token by the padding weight ``EVAL_WEIGHT`` and, when the batch has
one, its ``mask`` (1 on real tokens), so the last partial batch and padded sequences count
exactly once. ``tokens`` counts the tokens trained on (``train/tokens_per_s``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research import precision as precision_lib
from research.data.base import EVAL_WEIGHT, Dataset
from research.engine.api import Evaluator
from research.errors import ConfigError
from research.evaluators.sums import Sums
from research.tasks.base import Batch, Metrics, State, require_fields
from research.tasks.supervised import SupervisedTask, train_arrays

METRICS = ("loss", "bits_per_token", "perplexity", "accuracy")


def token_weights(batch: Batch, num_targets: int) -> jax.Array:
    """(B, T) weights of the target positions: the batch's ``mask`` aligned with the targets, or 1."""
    tokens = batch["tokens"]
    mask = batch.get("mask")
    if mask is None:
        return jnp.ones((tokens.shape[0], num_targets), jnp.float32)
    mask = (
        mask[:, 1:] if mask.shape[1] == tokens.shape[1] else mask
    )  # a mask over the windows, or the targets
    return mask.astype(jnp.float32)


def lm_metrics(sums: Metrics) -> Metrics:
    loss = sums["nll"] / sums["count"]
    return {
        "loss": loss,
        "bits_per_token": loss / math.log(2.0),
        "perplexity": jnp.exp(loss),
        "accuracy": sums["correct"] / sums["count"],
    }


class LanguageModelTask(SupervisedTask):
    """Trains ``model(vocab_size=info["vocab_size"], max_len=context, rngs=...)``, a causal LM."""

    metric, metric_mode = "val/loss", "min"
    counters = ("tokens",)
    fields = ("tokens",)  # and "mask" where the data has one

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        precision: precision_lib.Policy | None = None,
    ):
        arrays = train_arrays(dataset, "language_model")
        require_fields(self.fields, "language_model", dataset, "choose a text corpus (data=shakespeare_char)")
        if "vocab_size" not in dataset.info:
            raise ConfigError(
                f"task=language_model needs a vocabulary; data={dataset.name} has no info.vocab_size"
            )
        tokens = arrays.get("tokens")
        if tokens is not None and (tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.dtype.kind not in "iu"):
            raise ConfigError(
                f"task=language_model needs integer windows tokens (N, context + 1); data={dataset.name} "
                f"gives {tokens.dtype} {tokens.shape}"
            )
        self.context = int(tokens.shape[1] - 1) if tokens is not None else int(dataset.info["context"])
        self.vocab_size = int(dataset.info["vocab_size"])
        kwargs = {"vocab_size": self.vocab_size, "max_len": self.context}
        super().__init__(model, make_optimizer, total_steps, dataset, kwargs, precision)

    def token_losses(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(per-token nll (B, T), logits (B, T, V), targets (B, T))."""
        tokens = batch["tokens"]
        logits = self.precision.cast_output(model(tokens[:, :-1]))
        targets = tokens[:, 1:]
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets), logits, targets

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        nll, _, targets = self.token_losses(model, batch)
        weights = token_weights(batch, targets.shape[1])
        count = jnp.sum(weights)
        loss = jnp.sum(nll * weights) / jnp.maximum(count, 1.0)
        return loss, {"bits_per_token": loss / math.log(2.0), "tokens": count}

    def eval_step(self, state: State, batch: Batch) -> Metrics:
        batch = self.dataset.transform(state["rng"], batch, False)
        nll, logits, targets = self.token_losses(self.eval_model(state), batch)
        weights = token_weights(batch, targets.shape[1]) * batch[EVAL_WEIGHT][:, None]
        return {
            "nll": jnp.sum(nll * weights),
            "count": jnp.sum(weights),
            "correct": jnp.sum((jnp.argmax(logits, -1) == targets) * weights),
        }

    def evaluators(self) -> dict[str, Evaluator]:
        return {"metrics": Sums(self.eval_step, lm_metrics, METRICS)}
