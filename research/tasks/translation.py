"""Sequence-to-sequence translation: teacher-forced cross-entropy; decoded exact match and BLEU.

The data (research/data/text_pairs.py) gives ``source`` (B, S) and ``target`` (B, T + 2) ids,
``<s>`` first and padded after ``</s>``. Training reads ``target[:, :-1]`` and is scored on
``target[:, 1:]``, padding left out of the mean (``loss``, ``token_accuracy``). Evaluation
also decodes the split twice in one compiled pass, greedily and with beam search, and the
host compares the texts with the references: the share decoded exactly
(``greedy_exact_match``, ``beam_exact_match``) and sacrebleu's corpus BLEU
(``greedy_bleu``, ``beam_bleu``; ``bleu_tokenize`` names sacrebleu's tokenizer: ``char``
suits one-word targets such as digits). One fixed validation example's cross-attention,
as the model reads its reference (teacher forced), is drawn as an image at each evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research import precision as precision_lib
from research.data.base import EVAL_WEIGHT, Dataset
from research.data.text_pairs import KIND, from_info
from research.engine.api import Evaluator, Result
from research.errors import ConfigError, DataError
from research.evaluators.attention_maps import AttentionMap
from research.evaluators.collect import Collect
from research.evaluators.sums import Sums
from research.models.seq2seq_decode import translate
from research.tasks.base import Batch, Metrics, State, require_fields
from research.tasks.supervised import SupervisedTask

METRICS = ("loss", "token_accuracy")
DECODED = ("greedy_exact_match", "beam_exact_match", "greedy_bleu", "beam_bleu")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str) -> float:
    """sacrebleu's corpus BLEU (0-100) of one reference per hypothesis."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score)


class TranslationTask(SupervisedTask):
    """Trains ``model(vocab_size, max_source_len, max_target_len, pad_id, rngs)``, an encoder-decoder."""

    metric, metric_mode = "val/greedy_exact_match", "max"
    counters = ("tokens",)
    fields = ("source", "target")

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        beam_size: int = 4,
        length_penalty: float = 0.6,
        bleu_tokenize: str = "13a",
        attention_example: int = 0,
        precision: precision_lib.Policy | None = None,
    ):
        if dataset is None or dataset.info.get("tokenizer") != KIND:
            raise ConfigError(
                "task=translation needs text pairs: set data=number_words or data=ted_hrlr_translate"
            )
        require_fields(self.fields, "translation", dataset)
        if (
            isinstance(beam_size, bool)
            or not isinstance(beam_size, int)
            or beam_size < 1
            or length_penalty < 0
        ):
            raise ConfigError(f"task.beam_size={beam_size} must be >= 1 and task.length_penalty >= 0")
        _check_bleu_tokenize(bleu_tokenize)
        info = dataset.info
        self.tokenizer, self.source_len = from_info(info), int(info["source_len"])
        self.steps = int(info["target_len"]) + 1  # the target's characters and </s>
        self.ids = (int(info["bos_id"]), int(info["eos_id"]), int(info["pad_id"]))
        self.beam_size, self.length_penalty, self.bleu_tokenize = (
            beam_size,
            float(length_penalty),
            bleu_tokenize,
        )
        kwargs = {"vocab_size": self.tokenizer.vocab_size, "max_source_len": self.source_len,
                  "max_target_len": self.steps, "pad_id": self.ids[2]}  # fmt: skip
        super().__init__(model, make_optimizer, total_steps, dataset, kwargs, precision)
        val = dataset.splits["val"].arrays()
        if not 0 <= attention_example < len(val["source"]):
            raise ConfigError(f"task.attention_example={attention_example} is not a validation example index")
        self.example = {
            k: jnp.asarray(val[k][attention_example : attention_example + 1]) for k in self.fields
        }

    def token_losses(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(per-token nll (B, T), correct (B, T), weights (B, T): 1 on real target tokens)."""
        target = batch["target"]
        logits = self.precision.cast_output(model(batch["source"], target[:, :-1]))
        labels = target[:, 1:]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return nll, jnp.argmax(logits, -1) == labels, (labels != self.ids[2]).astype(jnp.float32)

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        nll, correct, weights = self.token_losses(model, batch)
        count = jnp.sum(weights)
        accuracy = jnp.sum(correct * weights) / jnp.maximum(count, 1.0)
        return jnp.sum(nll * weights) / jnp.maximum(count, 1.0), {"token_accuracy": accuracy, "tokens": count}

    def eval_step(self, state: State, batch: Batch) -> Metrics:
        batch = self.dataset.transform(state["rng"], batch, False)
        nll, correct, weights = self.token_losses(self.eval_model(state), batch)
        weights = weights * batch[EVAL_WEIGHT][:, None]
        return {
            "nll": jnp.sum(nll * weights),
            "correct": jnp.sum(correct * weights),
            "count": jnp.sum(weights),
        }

    def decode(self, state: State, source: jax.Array, beam: int) -> jax.Array:
        """(B, steps) output ids of ``source`` (B, S): greedy for ``beam`` 1, else beam search."""
        return translate(self.eval_model(state), source, self.steps, beam, self.length_penalty, *self.ids)

    def outputs(self, state: State, batch: Batch) -> dict:
        batch = self.dataset.transform(state["rng"], batch, False)
        source = batch["source"]
        return {
            "greedy": self.decode(state, source, 1),
            "beam": self.decode(state, source, self.beam_size),
            "reference": batch["target"][:, 1:],
        }

    def scores(self, outputs: dict[str, np.ndarray]) -> Result:
        """Exact match and BLEU of both decodings, on the host."""
        texts = {k: [self.tokenizer.decode(row) for row in v] for k, v in outputs.items()}
        metrics = {}
        for kind in ("greedy", "beam"):
            hits = [h == r for h, r in zip(texts[kind], texts["reference"], strict=True)]
            metrics[f"{kind}_exact_match"] = np.float32(np.mean(hits))
            metrics[f"{kind}_bleu"] = np.float32(
                corpus_bleu(texts[kind], texts["reference"], self.bleu_tokenize)
            )
        return Result(metrics)

    def attention(self, state: State) -> dict:
        """The model's attention over the source (the Transformer's last decoder block, the LSTM
        decoder's) while it reads the fixed example's reference."""
        source, target = self.example["source"], self.example["target"]
        weights = self.eval_model(state).cross_attention(source, target[:, :-1])
        return {"weights": weights[0], "output": target[0, 1:]}

    def output_labels(self, ids: np.ndarray) -> list[str]:
        text = self.tokenizer.decode(ids)
        return [*text, "</s>"][: len(ids)]

    def evaluators(self) -> dict[str, Evaluator]:
        source = self.tokenizer.decode(np.asarray(self.example["source"][0]))
        return {
            "metrics": Sums(self.eval_step, _token_metrics, METRICS),
            "decoded": Collect(self.outputs, self.scores, DECODED),
            "attention": AttentionMap(self.attention, list(source), self.output_labels),
        }

    def translate_texts(self, state: State, texts: Sequence[str], beam: int | None = None) -> list[str]:
        """The model's outputs for ``texts``; a character outside its vocabulary or a text longer than
        the source length is one line (bad input)."""
        rows = []
        for text in texts:
            ids = self.tokenizer.encode(text, strict=True)
            if len(ids) > self.source_len:
                raise DataError(
                    f"the input {text!r} has {len(ids)} characters, over the {self.source_len} trained on"
                )
            rows.append(np.pad(ids, (0, self.source_len - len(ids)), constant_values=self.ids[2]))
        decode = jax.jit(self.decode, static_argnums=2)
        out = jax.device_get(decode(state, jnp.asarray(np.stack(rows)), beam or self.beam_size))
        return [self.tokenizer.decode(row) for row in out]


def _token_metrics(sums: Metrics) -> Metrics:
    count = jnp.maximum(sums["count"], 1.0)
    return {"loss": sums["nll"] / count, "token_accuracy": sums["correct"] / count}


def _check_bleu_tokenize(name: str) -> None:
    from sacrebleu.metrics import BLEU

    if name not in BLEU.TOKENIZERS:
        raise ConfigError(
            f"task.bleu_tokenize={name!r} is not one of sacrebleu's: {', '.join(BLEU.TOKENIZERS)}"
        )
