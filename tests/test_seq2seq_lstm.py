"""The LSTM encoder-decoder with attention: what its decoder may see, where it attends, and that
translate() drives it as it drives the Transformer (greedy is the step-by-step argmax; beam 1 is
greedy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.data.text_pairs import BOS_ID, EOS_ID, PAD_ID
from research.errors import ConfigError
from research.models.seq2seq_decode import beam_search, translate
from research.models.seq2seq_lstm import ATTENTIONS, Seq2SeqLSTM

VOCAB, SOURCE_LEN, STEPS, REAL = 12, 8, 6, 5
# One width throughout (and one encoder layer): each new shape costs an eager initialiser's compile.
TINY = {"embed_dim": 8, "encoder_hidden": 4, "encoder_layers": 1, "hidden_size": 8, "decoder_layers": 2,
        "attention_dim": 8, "dropout": 0.0}  # fmt: skip


def _model(attention: str = "general", **changes: object) -> Seq2SeqLSTM:
    settings = {**TINY, "attention": attention, **changes}
    return Seq2SeqLSTM(VOCAB, SOURCE_LEN, STEPS, rngs=nnx.Rngs(0), **settings)


@pytest.fixture(scope="module")
def models() -> dict[str, Seq2SeqLSTM]:
    """One tiny model per attention kind, made once for the module."""
    return {kind: _model(kind) for kind in ATTENTIONS}


@nnx.jit
def _logits(
    model: Seq2SeqLSTM, source: jax.Array, target: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    return model.decode(*model.encode(source, mask), target)


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    source = rng.integers(4, VOCAB, (2, SOURCE_LEN)).astype(np.int32)
    source[:, REAL:] = PAD_ID  # five real tokens, three of padding
    return source, rng.integers(4, VOCAB, (2, STEPS)).astype(np.int32)


def _other(tokens: np.ndarray) -> np.ndarray:
    """Another real token in place of each."""
    return (tokens - 4 + 1) % (VOCAB - 4) + 4


def test_decoder_sees_only_earlier_targets_and_real_source(models: dict[str, Seq2SeqLSTM]) -> None:
    model = models["general"]
    source, target = _batch()
    logits = np.asarray(_logits(model, source, target))

    future = target.copy()
    future[:, 3] = _other(future[:, 3])
    changed = np.asarray(_logits(model, source, future))
    np.testing.assert_allclose(changed[:, :3], logits[:, :3], atol=1e-6)  # earlier positions unchanged
    assert np.abs(changed[:, 3:] - logits[:, 3:]).max() > 1e-4  # the change is seen from position 3 on

    mask = jnp.asarray((np.arange(SOURCE_LEN) < REAL).astype(np.float32)[None].repeat(2, 0))
    padded = source.copy()
    padded[:, REAL:] = 5  # a real token where the mask says padding
    masked = _logits(model, padded, target, mask)
    np.testing.assert_allclose(np.asarray(masked), logits, atol=1e-6)
    real = source.copy()
    real[:, 2] = _other(real[:, 2])
    assert np.abs(np.asarray(_logits(model, real, target)) - logits).max() > 1e-4  # the real source is read


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_is_a_distribution_over_the_real_source(attention: str, models: dict) -> None:
    source, target = _batch(1)
    source[1, 3:] = PAD_ID  # the second example is shorter: three real tokens
    weights = np.asarray(nnx.jit(Seq2SeqLSTM.cross_attention)(models[attention], source, target))
    assert weights.shape == (2, STEPS, SOURCE_LEN)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert np.all(weights[0, :, REAL:] == 0.0) and np.all(weights[1, :, 3:] == 0.0)
    assert np.all(weights[0, :, :REAL] > 0.0) and np.all(weights[1, :, :3] > 0.0)


def test_translate_is_the_step_by_step_argmax_and_beam_one_is_greedy(models: dict[str, Seq2SeqLSTM]) -> None:
    model = models["general"]
    source = np.random.default_rng(2).integers(4, VOCAB, (4, SOURCE_LEN)).astype(np.int32)
    source[:2, 4:] = PAD_ID
    decode = nnx.jit(translate, static_argnums=(2, 3, 4, 5, 6, 7))
    decoded = np.asarray(decode(model, jnp.asarray(source), STEPS, 1, 0.6, BOS_ID, EOS_ID, PAD_ID))

    # The reference: the whole model (encoder included, no cache) over a buffer, one argmax per step.
    tokens, done = np.full((4, STEPS + 1), PAD_ID, np.int32), np.zeros(4, bool)
    tokens[:, 0] = BOS_ID
    for i in range(STEPS):
        token = np.argmax(np.asarray(_logits(model, source, tokens[:, :-1]))[:, i], -1).astype(np.int32)
        tokens[:, i + 1] = np.where(done, PAD_ID, token)
        done |= token == EOS_ID
    np.testing.assert_array_equal(decoded, tokens[:, 1:])

    @nnx.jit
    def beam_of_one(model: Seq2SeqLSTM, source: jax.Array) -> jax.Array:
        memory, mask = model.encode(source)
        cache = model.memory_keys_values(memory)

        def logits_fn(prefix: jax.Array) -> jax.Array:
            return model.decode_cached(cache, mask, prefix)

        return beam_search(logits_fn, 4, STEPS, 1, 0.6, BOS_ID, EOS_ID, PAD_ID)[0]

    np.testing.assert_array_equal(np.asarray(beam_of_one(model, source)), decoded)


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^model.attention='dot' is not one of: general, additive$"):
        _model("dot")
    with pytest.raises(ConfigError, match=r"^model.hidden_size=0 must be an integer >= 1$"):
        _model(hidden_size=0)
