"""Speech recognition with CTC (Graves et al. 2006): characters from log-mel frames, no alignment given.

The data (research/data/speech.py) gives int16 ``audio`` with its length and character ids
``label`` with theirs; its transform makes ``features`` and ``feature_mask`` on device. The
model (research/models/speech.py) maps features to per-frame logits over blank + alphabet and
its own frame mask; ``optax.ctc_loss`` sums over every alignment of the label to the real
frames (logit and label paddings given), reported per label character. Evaluation gathers each
split's log-probabilities, decodes them on the host (greedy at every evaluation, prefix beam
search at the final one) and reports the character and word error rates over the whole split.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research import precision as precision_lib
from research.data.base import Dataset
from research.data.speech import BLANK, decode
from research.engine.api import Evaluator, Result, Schedule
from research.errors import ConfigError
from research.evaluators.collect import Collect
from research.tasks import ctc_decoding
from research.tasks.base import Batch, Metrics, State
from research.tasks.supervised import SupervisedTask


def ctc_per_char(logits: jax.Array, mask: jax.Array, labels: jax.Array, lengths: jax.Array) -> jax.Array:
    """(B,) CTC negative log-likelihood of ``labels`` (B, L; the first ``lengths`` real) given
    ``logits`` (B, T, V) at the frames ``mask`` (B, T) marks real, per label character."""
    lengths = lengths.astype(jnp.int32)
    label_paddings = (jnp.arange(labels.shape[1])[None] >= lengths[:, None]).astype(jnp.float32)
    logit_paddings = 1.0 - mask.astype(jnp.float32)
    nll = optax.ctc_loss(logits, logit_paddings, labels.astype(jnp.int32), label_paddings, blank_id=BLANK)
    return nll / jnp.maximum(lengths, 1)


class SpeechRecognitionTask(SupervisedTask):
    """CTC on ``label`` from ``model(features, feature_mask) -> (logits, mask)``."""

    metric, metric_mode = "val/cer", "min"
    fields = ("audio", "audio_length", "label", "label_length")

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        beam_width: int = 8,
        beam_prune: float = -10.0,
        precision: precision_lib.Policy | None = None,
    ):
        if dataset is None or "alphabet" not in dataset.info or dataset.input_shape is None:
            raise ConfigError(
                "task=speech_recognition needs speech data: set data=spoken_digits (or speech_commands)"
            )
        if beam_width < 0:
            raise ConfigError(f"task.beam_width={beam_width} must be >= 0 (0: greedy decoding only)")
        self.alphabet, self.beam_width, self.beam_prune = (
            dataset.info["alphabet"],
            int(beam_width),
            float(beam_prune),
        )
        kwargs = {"input_shape": tuple(dataset.input_shape), "num_outputs": len(self.alphabet) + 1}
        super().__init__(model, make_optimizer, total_steps, dataset, kwargs, precision)

    def losses(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(per-utterance CTC loss per label character, log-probs (B, T', V), output frame mask)."""
        logits, mask = model(batch["features"], batch["feature_mask"])
        logits = self.precision.cast_output(logits).astype(jnp.float32)
        loss = ctc_per_char(logits, mask, batch["label"], batch["label_length"])
        return loss, jax.nn.log_softmax(logits), mask

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        per_char, _, _ = self.losses(model, batch)
        return per_char.mean(), {}

    def outputs(self, state: State, batch: Batch) -> dict[str, jax.Array]:
        """What the host decodes: log-probs, real output frames, the labels, the loss."""
        batch = self.dataset.transform(state["rng"], batch, False)
        loss, log_probs, mask = self.losses(self.eval_model(state), batch)
        return {
            "log_probs": log_probs,
            "frames": mask.sum(1).astype(jnp.int32),
            "label": batch["label"],
            "label_length": batch["label_length"],
            "loss": loss,
        }

    def references(self, out: dict[str, np.ndarray]) -> list[str]:
        return [
            decode(row[:n], self.alphabet) for row, n in zip(out["label"], out["label_length"], strict=True)
        ]

    def greedy_metrics(self, out: dict[str, np.ndarray]) -> Result:
        hyps = [
            decode(ctc_decoding.greedy(lp, int(n), BLANK), self.alphabet)
            for lp, n in zip(out["log_probs"], out["frames"], strict=True)
        ]
        rates = ctc_decoding.error_rates(self.references(out), hyps)
        return Result({"loss": float(np.mean(out["loss"])), **rates}, {})

    def beam_metrics(self, out: dict[str, np.ndarray]) -> Result:
        hyps = [
            decode(
                ctc_decoding.beam_search(lp, int(n), BLANK, self.beam_width, self.beam_prune), self.alphabet
            )
            for lp, n in zip(out["log_probs"], out["frames"], strict=True)
        ]
        rates = ctc_decoding.error_rates(self.references(out), hyps)
        return Result({f"beam_{k}": v for k, v in rates.items()}, {})

    def evaluators(self) -> dict[str, Evaluator]:
        greedy = Collect(self.outputs, self.greedy_metrics, ("loss", "cer", "wer"))
        if not self.beam_width:
            return {"metrics": greedy}
        beam = Collect(
            self.outputs, self.beam_metrics, ("beam_cer", "beam_wer"), Schedule(every=0, final=True)
        )
        beam.program = greedy.program  # one compiled pass for both: only the decoding on the host differs
        return {"metrics": greedy, "beam": beam}
