"""The language-model task's units (nats, bits, perplexity), and sampling from a trained run's checkpoint."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from research.data.arrays import make_dataset
from research.data.base import EVAL_WEIGHT
from research.data.text import CharTokenizer
from research.tasks.language_model import LanguageModelTask, lm_metrics
from tests.conftest import ROOT, TINY, run_train

VOCAB = 11


class Uniform(nnx.Module):
    """Logits 0 everywhere: every next token has probability 1 / vocab_size."""

    def __init__(self, vocab_size: int, max_len: int, *, rngs: nnx.Rngs):
        self.vocab_size, self.max_len = vocab_size, max_len
        self.unused = nnx.Param(jnp.zeros(()))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.zeros((*tokens.shape, self.vocab_size)) * self.unused


def lm_data(mask: bool = False) -> object:
    tokens = np.random.default_rng(0).integers(0, VOCAB, (20, 9)).astype(np.int32)
    fields = {"tokens": tokens, **({"mask": np.ones_like(tokens, np.float32)} if mask else {})}
    return make_dataset("toy", {s: fields for s in ("train", "val", "test")}, 4, 8, input_shape=(8,),
                        info={"vocab_size": VOCAB, "context": 8})  # fmt: skip


def eval_sums(task: LanguageModelTask, batch: dict, weight: np.ndarray) -> dict:
    state = task.init(jax.random.PRNGKey(0), None)
    return task.eval_step(
        state, {**{k: jnp.asarray(v) for k, v in batch.items()}, EVAL_WEIGHT: jnp.asarray(weight)}
    )


def test_a_uniform_model_scores_ln_vocab_nats_and_log2_vocab_bits() -> None:
    task = LanguageModelTask(Uniform, lambda n: optax.sgd(0.0), 10, lm_data())
    assert task.context == 8 and task.model_kwargs == {"vocab_size": VOCAB, "max_len": 8}
    batch = task.dataset.splits["val"].arrays()
    metrics = lm_metrics(eval_sums(task, batch, np.ones(20, np.float32)))
    np.testing.assert_allclose(metrics["loss"], math.log(VOCAB), rtol=1e-6)
    np.testing.assert_allclose(metrics["bits_per_token"], math.log2(VOCAB), rtol=1e-6)
    np.testing.assert_allclose(metrics["bits_per_token"], metrics["loss"] / math.log(2), rtol=1e-6)
    np.testing.assert_allclose(metrics["perplexity"], VOCAB, rtol=1e-5)


def test_padding_rows_and_masked_tokens_do_not_count() -> None:
    task = LanguageModelTask(Uniform, lambda n: optax.sgd(0.0), 10, lm_data(mask=True))
    batch = dict(task.dataset.splits["val"].arrays())
    batch["mask"] = batch["mask"].copy()
    batch["mask"][:, 5:] = 0.0  # targets 5..7 of each window are padding
    weight = np.r_[np.ones(15), np.zeros(5)].astype(np.float32)
    sums = eval_sums(task, batch, weight)
    assert float(sums["count"]) == 15 * 4  # targets 1..4 of the 15 real rows


def sample_cmd(run_dir: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "research.sample", f"run={run_dir}", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-2000:]  # the sample is all a user should see
    return proc.stdout[:-1]  # the trailing newline print adds


@pytest.mark.slow
def test_train_a_tiny_lm_then_sample_from_its_checkpoint(tmp_path: Path) -> None:
    text = "to be or not to be that is the question " * 60
    (tmp_path / "corpus.txt").write_text(text)
    run_dir = tmp_path / "run"
    run_train(
        "task=language_model", "model=transformer_lm", "data=text_files",
        f"data.path={tmp_path / 'corpus.txt'}", "data.context=16", "data.stride=4", "data.batch_size=8",
        "model.dim=32", "model.depth=1", "model.num_heads=2", "model.mlp_dim=64", "trainer.max_steps=30",
        "trainer.eval_every=15", "trainer.steps_per_call=15", "optimizer/schedule=constant", "name=tiny_lm",
        *TINY, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    vocab = set(CharTokenizer.fit(text[: round(0.9 * len(text))]).itos)
    out = sample_cmd(run_dir, "prompt=to be", "max_new_tokens=40", "temperature=1.0", "top_k=5", "seed=1")
    assert out.startswith("to be") and len(out) == len("to be") + 40
    assert set(out[len("to be") :]) <= vocab
    greedy = [sample_cmd(run_dir, "prompt=to be", "max_new_tokens=25", "temperature=0") for _ in range(2)]
    assert greedy[0] == greedy[1] and len(greedy[0]) == len("to be") + 25


def test_sample_without_a_run_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "research.sample", "prompt=x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "run=<run dir> is required" in proc.stderr
