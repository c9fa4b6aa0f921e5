"""Sequence-to-sequence translation: what the decoder may see, beam search against greedy, the
unknown-character line, BLEU as sacrebleu computes it, and the generated number-words data."""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sacrebleu
from flax import nnx

from research import console
from research.data import number_words
from research.data.text_pairs import BOS_ID, EOS_ID, PAD_ID, encode_pairs, pairs_dataset
from research.errors import DataError
from research.models.seq2seq import Seq2SeqTransformer
from research.models.seq2seq_decode import beam_search, greedy, sequence_log_prob
from research.tasks.translation import TranslationTask

TINY = {"dim": 16, "encoder_depth": 1, "decoder_depth": 2, "num_heads": 2, "mlp_dim": 32, "dropout": 0.0}
PAIRS = [("one", "1"), ("two", "2"), ("twelve", "12"), ("twenty", "20"), ("two hundred", "200")]


def _model(scan: bool = False) -> Seq2SeqTransformer:
    return Seq2SeqTransformer(
        vocab_size=12, max_source_len=8, max_target_len=6, positions="learned", scan_layers=scan,
        rngs=nnx.Rngs(0), **TINY,
    )  # fmt: skip


def test_decoder_sees_only_earlier_targets_and_real_source() -> None:
    model = _model()
    rng = np.random.default_rng(0)
    source = rng.integers(4, 12, (2, 8)).astype(np.int32)
    source[:, 5:] = PAD_ID  # five real tokens, three of padding
    target = rng.integers(4, 12, (2, 6)).astype(np.int32)
    logits = np.asarray(model(source, target))

    future = target.copy()
    future[:, 3] = (future[:, 3] - 4 + 1) % 8 + 4  # another real token at position 3
    changed = np.asarray(model(source, future))
    np.testing.assert_allclose(changed[:, :3], logits[:, :3], atol=1e-6)  # earlier positions unchanged
    assert np.abs(changed[:, 3:] - logits[:, 3:]).max() > 1e-4  # the change is seen from position 3 on

    padded = source.copy()
    padded[:, 6] = 7  # a token where the source is padding: no longer padding, so compare via the mask
    masked = model.decode(*_encode_with_mask(model, padded, real=5), target)
    np.testing.assert_allclose(np.asarray(masked), logits, atol=1e-6)
    real = source.copy()
    real[:, 2] = (real[:, 2] - 4 + 1) % 8 + 4
    assert np.abs(np.asarray(model(real, target)) - logits).max() > 1e-4  # the real source is read


def _encode_with_mask(model: Seq2SeqTransformer, source: np.ndarray, real: int) -> tuple:
    """The encoder's output of ``source`` with only its first ``real`` tokens marked real."""
    mask = (np.arange(source.shape[1]) < real).astype(np.float32)[None].repeat(len(source), 0)
    memory = model.encoder(model._embed(jnp.asarray(source), model.source_positions), jnp.asarray(mask))
    return memory, jnp.asarray(mask)


def test_cross_attention_weights_leave_padding_out() -> None:
    model = _model(scan=True)  # the last block taken out of the stacked (scanned) layout
    source = np.array([[5, 6, 7, 8, 9, PAD_ID, PAD_ID, PAD_ID]], np.int32)
    weights = np.asarray(model.cross_attention(source, np.array([[BOS_ID, 5, 6]], np.int32)))
    assert weights.shape == (1, 3, 8)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights[..., 5:] == 0.0)


def test_beam_of_one_is_greedy() -> None:
    model = _model()
    source = np.random.default_rng(1).integers(4, 12, (5, 8)).astype(np.int32)
    memory, mask = model.encode(source)
    kvs = model.memory_keys_values(memory)

    def logits_fn(tokens: jax.Array) -> jax.Array:
        return model.decode_cached(kvs, mask, tokens)

    tokens = jnp.ones((5, 5), jnp.int32)  # the cached keys and values change nothing
    np.testing.assert_allclose(logits_fn(tokens), model.decode(memory, mask, tokens), atol=1e-6)
    expected = greedy(logits_fn, 5, 5, BOS_ID, EOS_ID, PAD_ID)
    tokens, _ = beam_search(logits_fn, 5, 5, 1, 0.6, BOS_ID, EOS_ID, PAD_ID)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(expected))


# A bigram table over <pad>, <s>, </s>, A, B, C: greedy takes A (0.6) then C (0.55), 0.33 in all;
# B (0.4) then </s> (1.0) is more likely, and only a search over two beams finds it.
A, B, C = 3, 4, 5
BIGRAM = np.full((6, 6), 1e-9)
BIGRAM[BOS_ID, [A, B]] = 0.6, 0.4
BIGRAM[A, [C, EOS_ID]] = 0.55, 0.45
BIGRAM[[B, C, EOS_ID, PAD_ID], EOS_ID] = 1.0


def _bigram_logits(tokens: jax.Array) -> jax.Array:
    return jnp.log(jnp.asarray(BIGRAM, jnp.float32))[tokens]


def test_beam_search_finds_a_likelier_sequence_than_greedy() -> None:
    greedy_tokens = greedy(_bigram_logits, 1, 4, BOS_ID, EOS_ID, PAD_ID)
    beam_tokens, score = beam_search(_bigram_logits, 1, 4, 2, 0.0, BOS_ID, EOS_ID, PAD_ID)
    assert np.asarray(greedy_tokens).tolist() == [[A, C, EOS_ID, PAD_ID]]
    assert np.asarray(beam_tokens).tolist() == [[B, EOS_ID, PAD_ID, PAD_ID]]
    greedy_score = float(sequence_log_prob(_bigram_logits, greedy_tokens, BOS_ID, PAD_ID)[0])
    assert greedy_score == pytest.approx(math.log(0.6 * 0.55), abs=1e-5)
    assert float(score[0]) == pytest.approx(math.log(0.4), abs=1e-5) and float(score[0]) > greedy_score


def _task() -> TranslationTask:
    dataset = pairs_dataset(
        "pairs", {s: PAIRS for s in ("train", "val", "test")}, 12, 3, 2, 4, truncate=False
    )
    model = functools.partial(Seq2SeqTransformer, positions="learned", **TINY)
    return TranslationTask(
        model, lambda steps: optax.adam(1e-3), 10, dataset, beam_size=2, bleu_tokenize="char"
    )


def test_an_unknown_character_is_one_line(capsys: pytest.CaptureFixture) -> None:
    task = _task()
    state = task.init(jax.random.PRNGKey(0), None)
    assert len(task.translate_texts(state, ["two", "twelve"])) == 2  # known characters decode
    with pytest.raises(SystemExit) as exit_info, console.report_errors():
        task.translate_texts(state, ["two§"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'§'" in err and "\n" not in err
    with pytest.raises(DataError, match="over the 12 trained on"):
        task.translate_texts(state, ["two hundred twenty"])


def test_bleu_and_exact_match_are_sacrebleus() -> None:
    task = _task()
    references = ["twelve one", "two hundred", "twenty", "one"]
    hypotheses = ["twelve one", "two hundre", "twenty two", "one"]
    ids = {k: encode_pairs([(t, t) for t in v], task.tokenizer, 12, 12)[0]["target"][:, 1:]
           for k, v in (("reference", references), ("greedy", hypotheses), ("beam", references))}  # fmt: skip
    metrics = task.scores(ids).metrics
    expected = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="char").score
    assert metrics["greedy_bleu"] == pytest.approx(expected, rel=1e-5) and 0 < expected < 100
    assert metrics["beam_bleu"] == pytest.approx(100.0)
    assert metrics["greedy_exact_match"] == pytest.approx(0.5) and metrics["beam_exact_match"] == 1.0


def test_number_words_are_held_out_by_value_and_cached(tmp_path) -> None:
    settings = dict(languages=["en", "fr", "de", "es"], kinds=["cardinal", "date"], max_digits=4,
                    first_year=1950, last_year=2050, direction="to_normal", train_size=300, val_size=60,
                    test_size=60, held_out=0.1, seed=0, source_len=60, target_len=10, batch_size=8,
                    eval_batch_size=30)  # fmt: skip
    dataset = number_words.load(str(tmp_path), **settings)
    cached = list((tmp_path / number_words.FOLDER).glob("*.json"))
    assert len(cached) == 1
    pairs = json.loads(cached[0].read_text())
    train_values = {t for _, t in pairs["train"]}
    assert not train_values & {t for _, t in pairs["test"]}  # no test value seen in training
    assert any("-" in t for t in train_values) and any(t.isdigit() for t in train_values)  # both kinds
    assert {"ß", "é"} & set("".join(s for s, _ in pairs["train"]))  # more than English
    again = number_words.load(str(tmp_path), **settings)  # read back from the cache
    np.testing.assert_array_equal(
        again.splits["test"].arrays()["target"], dataset.splits["test"].arrays()["target"]
    )
    assert dataset.info["generated"] is True
    with pytest.raises(DataError, match="data.source_len=20"):
        number_words.load(str(tmp_path), **{**settings, "source_len": 20})
