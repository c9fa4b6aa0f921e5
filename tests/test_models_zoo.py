"""The model zoo (ViT, RNN/LSTM/GRU, Transformer encoder and LM, EmbedPool, sampling): behaviour.

Causality, padding masks, the backward RNN's start, the LSTM/GRU equations, weight tying,
rotary positions, greedy and top-k sampling, config errors, published parameter counts,
and sharded forwards on 8 simulated CPU devices (in a child process, as test_sharding).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from research.config import CONF_DIR
from research.engine.sharding import AXES, compile_rules, leaf_spec
from research.errors import ConfigError
from research.models import sampling
from research.models.rnn import Recurrence, RNNClassifier, RNNRegressor
from research.models.text import EmbedPool
from research.models.transformer import TransformerClassifier, TransformerLM, rotary
from research.models.vit import ViT
from tests.conftest import ROOT

VOCAB, T, B = 23, 8, 8  # B: splits over the 8 devices of the sharded check
PARAM_STD = 0.3


def rngs(seed: int = 0) -> nnx.Rngs:
    return nnx.Rngs(params=seed, dropout=seed + 1)


# Test data and parameters come from NumPy: on CPU, JAX's random ops compile once per new
# shape (~0.5 s each), and every property tested here holds for any parameters.
def tokens(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, shape), jnp.int32)


def floats(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def built(build: Callable[[], nnx.Module], seed: int = 0) -> nnx.Module:
    """``build()``'s module with NumPy-drawn parameters (N(0, PARAM_STD)) instead of its initialisers'."""
    graphdef, state = nnx.split(nnx.eval_shape(build))
    rng = np.random.default_rng(seed)

    def fill(leaf: jax.ShapeDtypeStruct) -> jax.Array:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(seed)  # the dropout streams' keys
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(rng.normal(0.0, PARAM_STD, leaf.shape), leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return nnx.merge(graphdef, jax.tree.map(fill, nnx.to_pure_dict(state)))


@functools.cache
def lm(positions: str = "learned", tie: bool = True) -> TransformerLM:
    """Built once per variant: the tests only read it."""
    return built(lambda: TransformerLM(*LM_ARGS, positions, tie, rngs=rngs()))


LM_ARGS = (VOCAB, T, 16, 1, 4, 32, 0.0)  # vocab, max_len, dim, depth, heads, mlp_dim, dropout
MODELS = {  # name -> (class, constructor args but rngs, input maker, input shape); widths divide 4
    "vit": (ViT, ((8, 8, 3), 5, 4, 16, 1, 4, 32, "cls", 0.0), floats, (B, 8, 8, 3)),
    "vit_mean": (ViT, ((8, 8, 1), 5, 2, 16, 1, 4, 32, "mean", 0.0), floats, (B, 8, 8, 1)),
    "lstm_tokens_bi": (RNNClassifier, ((T,), 3, "lstm", 8, 2, True, "last", 0.0, VOCAB, 8), tokens, (B, T)),
    "gru_floats_mean": (RNNClassifier, ((T, 3), 3, "gru", 8, 1, False, "mean", 0.0), floats, (B, T, 3)),
    "rnn_regressor": (RNNRegressor, ((T, 3), 4, "rnn", 8, 1, True, "last", 0.0), floats, (B, T, 3)),
    "transformer_mean": (
        TransformerClassifier,
        (VOCAB, 3, T, 16, 1, 4, 32, 0.0, "mean", "learned"),
        tokens,
        (B, T),
    ),
    "transformer_cls_rotary": (
        TransformerClassifier,
        (VOCAB, 3, T, 16, 1, 4, 32, 0.0, "cls", "rotary"),
        tokens,
        (B, T),
    ),
    "embed_pool": (EmbedPool, (VOCAB, 3, 8, [16, 8], 0.0), tokens, (B, T)),
    "lm_untied": (TransformerLM, (*LM_ARGS, "learned", False), tokens, (B, T)),
}
OUT_SHAPES = {"vit": (B, 5), "vit_mean": (B, 5), "rnn_regressor": (B, 4), "lm_untied": (B, T, VOCAB)}
MASKED = [name for name, (cls, *_) in MODELS.items() if cls not in (ViT, TransformerLM)]
LENGTHS = jnp.array([5, 8, 1, 3, 8, 2, 7, 4])  # real steps of each sequence in a batch of B


def build(name: str) -> nnx.Module:
    cls, args, _, _ = MODELS[name]
    return cls(*args, rngs=rngs())


def inputs(name: str) -> tuple[jax.Array, ...]:
    """The model's input, and a padding mask where it takes one."""
    _, _, make, shape = MODELS[name]
    return (make(shape), padding_mask()) if name in MASKED else (make(shape),)


def padding_mask() -> jax.Array:
    return jnp.arange(T)[None, :] < LENGTHS[:, None]


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shapes(name: str) -> None:
    out = jax.eval_shape(lambda *xs: build(name)(*xs), *inputs(name))
    assert out.shape == OUT_SHAPES.get(name, (B, 3))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causal_lm_logits_ignore_later_tokens(positions: str) -> None:
    model, x, t = lm(positions), tokens((2, T)), 3
    changed = x.at[:, t + 1 :].set((x[:, t + 1 :] + 1) % VOCAB)
    before, after = jnp.split(jax.jit(lambda x: model(x))(jnp.concatenate([x, changed])), 2)
    np.testing.assert_allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not np.allclose(before[:, t + 1 :], after[:, t + 1 :], atol=1e-4)


@pytest.mark.parametrize("name", MASKED)
def test_padded_positions_do_not_change_outputs(name: str) -> None:
    model, (x, mask) = built(lambda: build(name)), inputs(name)
    forward = jax.jit(lambda x: model(x, mask))
    pad = ~mask.reshape(*mask.shape, *([1] * (x.ndim - 2)))
    noise = (x + 1) % VOCAB if x.dtype == jnp.int32 else x + 3.0
    np.testing.assert_allclose(forward(jnp.where(pad, noise, x)), forward(x), atol=1e-5)
    real = jnp.zeros(mask.shape, bool).at[:, 0].set(True).reshape(pad.shape)
    assert not np.allclose(forward(jnp.where(real, noise, x)), forward(x), atol=1e-4)


@pytest.mark.parametrize("cell, pool, layers", [("lstm", "last", 2), ("gru", "mean", 1), ("rnn", "last", 1)])
def test_bidirectional_rnn_starts_backward_at_the_true_end(cell: str, pool: str, layers: int) -> None:
    model = built(lambda: RNNClassifier((T, 3), 4, cell, 8, layers, True, pool, 0.0, rngs=rngs()))
    forward = jax.jit(lambda x, mask: model(x, mask))
    x, length = floats((1, T, 3)), 5
    padded_x = x.at[:, length:].set(7.0)
    padded = forward(padded_x, (jnp.arange(T) < length)[None])
    unpadded = forward(x[:, :length], jnp.ones((1, length)))
    np.testing.assert_allclose(padded, unpadded, rtol=1e-5, atol=1e-6)
    # Without the mask the padding would count: the check can fail.
    assert not np.allclose(forward(padded_x, jnp.ones((1, T))), padded, atol=1e-4)


def _weights(layer: Recurrence) -> tuple[np.ndarray, ...]:
    wx, b = np.asarray(layer.input.kernel[...]), np.asarray(layer.input.bias[...])
    wh = np.asarray(layer.recurrent.kernel[...])
    return wx, b, wh


def test_lstm_step_matches_the_standard_equations() -> None:
    layer = built(lambda: Recurrence("lstm", 3, 4, False, rngs=rngs()))  # random, nonzero biases
    x = np.asarray(floats((2, 3, 3), seed=1))
    wx, b, wh = _weights(layer)
    sig = lambda v: 1 / (1 + np.exp(-v))
    h, c, hs = np.zeros((2, 4)), np.zeros((2, 4)), []
    for t in range(3):
        pre = [x[:, t] @ wx[:, k] + b[k] + h @ wh[:, k] for k in range(4)]
        i, f, g, o = sig(pre[0]), sig(pre[1]), np.tanh(pre[2]), sig(pre[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    outputs, last = jax.jit(lambda x: layer(x, jnp.ones((2, 3))))(jnp.asarray(x))
    np.testing.assert_allclose(outputs, np.stack(hs, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last, h, rtol=1e-5, atol=1e-6)


def test_gru_step_matches_pytorchs_equations() -> None:
    layer = built(lambda: Recurrence("gru", 3, 4, False, rngs=rngs()))  # b_hn: inside the reset product
    x = np.asarray(floats((2, 2, 3), seed=1))
    wx, b, wh = _weights(layer)
    bh = np.asarray(layer.recurrent.bias[...])
    sig = lambda v: 1 / (1 + np.exp(-v))
    h = np.zeros((2, 4))
    for t in range(2):
        r = sig(x[:, t] @ wx[:, 0] + b[0] + h @ wh[:, 0] + bh[0])
        z = sig(x[:, t] @ wx[:, 1] + b[1] + h @ wh[:, 1] + bh[1])
        n = np.tanh(x[:, t] @ wx[:, 2] + b[2] + r * (h @ wh[:, 2] + bh[2]))
        h = (1 - z) * n + z * h
    last = jax.jit(lambda x: layer(x, jnp.ones((2, 2)))[1])(jnp.asarray(x))
    np.testing.assert_allclose(last, h, rtol=1e-5, atol=1e-6)


def test_tied_lm_projects_with_the_embedding_transpose() -> None:
    tied, untied = lm(tie=True), lm(tie=False)
    params = nnx.to_pure_dict(nnx.state(tied, nnx.Param))
    assert "head" not in params
    assert untied.head is not None and untied.head.kernel.shape == (16, VOCAB)
    logits, features = jax.jit(lambda x: (tied(x), tied.features(x)))(tokens((2, T)))
    np.testing.assert_allclose(logits, features @ tied.embed.embedding[...].T, rtol=1e-5, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_offsets() -> None:
    q, k = floats((1, T, 2, 8), seed=1), floats((1, T, 2, 8), seed=2)
    scores = jax.jit(
        lambda start: jnp.einsum(
            "bqnh,bknh->bnqk", rotary(q, jnp.arange(T) + start), rotary(k, jnp.arange(T) + start)
        )
    )
    np.testing.assert_allclose(scores(0), scores(37), rtol=1e-4, atol=1e-4)
    plain = jnp.einsum("bqnh,bknh->bnqk", q, k)
    assert not np.allclose(scores(0), plain, atol=1e-3)  # positions do change the scores


def _argmax_decode(model: TransformerLM, prompt: jax.Array, steps: int) -> jax.Array:
    """nanoGPT's loop: crop to the context, take the last position's argmax, append."""
    next_token = jax.jit(lambda ids: jnp.argmax(model(ids)[:, -1], -1))
    ids = prompt
    for _ in range(steps):
        ids = jnp.concatenate([ids, next_token(ids[:, -model.max_len :])[:, None]], axis=1)
    return ids


def test_greedy_sampling_equals_argmax_decoding_from_split_state() -> None:
    model = lm("rotary")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rebuilt = nnx.merge(graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest))  # as a task keeps it
    prompt, steps = tokens((2, 7), seed=3), 4  # 7 + 4 > max_len: the window slides
    out = sampling.generate(rebuilt, prompt, steps, 0.0, None, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(out, _argmax_decode(model, prompt, steps))
    top1 = sampling.generate(rebuilt, prompt, steps, 1.0, 1, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(top1, out)
    compiled = sampling._sample._cache_size()
    sampling.generate(rebuilt, tokens((2, 2)), steps, 0.7, 4, jax.random.PRNGKey(2))
    assert sampling._sample._cache_size() == compiled  # another prompt length, temperature, k: no compile


def test_top_k_samples_only_the_k_largest_logits() -> None:
    logits = jnp.tile(jnp.array([[0.0, 3.0, 1.0, 2.5, -1.0]]), (2000, 1))
    pick = jax.jit(lambda k: sampling.pick(logits, jnp.float32(2.0), k, jax.random.PRNGKey(0)))
    assert set(np.unique(pick(jnp.int32(2))).tolist()) == {1, 3}
    everything = pick(jnp.int32(0))
    assert len(np.unique(everything)) == 5


@pytest.mark.parametrize(
    "image, patch, heads, pool, message",
    [
        ((28, 28, 1), 5, 4, "cls", "model.patch_size=5 does not divide the 28x28 images"),
        ((64,), 4, 4, "cls", "model ViT needs images"),
        ((8, 8, 1), 4, 3, "cls", "model.num_heads=3 must divide model.dim=16"),
        ((8, 8, 1), 4, 4, "max", "model.pool='max' is not one of: cls, mean"),
    ],
)
def test_vit_config_errors_are_one_line(
    image: tuple, patch: int, heads: int, pool: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as err:  # abstract: no parameters are created
        nnx.eval_shape(lambda: ViT(image, 10, patch, 16, 1, heads, 32, pool, 0.0, rngs=rngs()))
    assert "\n" not in str(err.value)


DATA_ARGS = {  # config -> what the task passes, the input, the output shape
    "vit": ({"input_shape": (32, 32, 3), "num_outputs": 10}, (2, 32, 32, 3), jnp.float32, (2, 10)),
    "rnn": ({"input_shape": (T,), "vocab_size": VOCAB, "num_outputs": 3}, (2, T), jnp.int32, (2, 3)),
    "rnn_regressor": ({"input_shape": (T, 2), "num_outputs": 6}, (2, T, 2), jnp.float32, (2, 6)),
    "transformer_classifier": (
        {"vocab_size": VOCAB, "num_outputs": 3, "max_len": T},
        (2, T),
        jnp.int32,
        (2, 3),
    ),
    "transformer_lm": ({"vocab_size": 65, "max_len": 64}, (2, 64), jnp.int32, (2, 64, 65)),
    "embed_pool": ({"vocab_size": VOCAB, "num_outputs": 3}, (2, T), jnp.int32, (2, 3)),
}


def _model_config(name: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(f"model/{name}", overrides=list(overrides)).model


@pytest.mark.parametrize("name", list(DATA_ARGS))
def test_configs_instantiate(name: str) -> None:
    kwargs, shape, dtype, out = DATA_ARGS[name]
    model_fn = instantiate(_model_config(name), _partial_=True, _convert_="all")
    forward = lambda x: model_fn(**kwargs, rngs=rngs())(x)
    assert jax.eval_shape(forward, jax.ShapeDtypeStruct(shape, dtype)).shape == out


GPT2_SMALL = (
    "model.dim=768",
    "model.depth=12",
    "model.num_heads=12",
    "model.mlp_dim=3072",
)


@pytest.mark.parametrize(
    "overrides, vocab, context, params",
    [((), 65, 64, 809_856), (GPT2_SMALL, 50257, 1024, 124_439_808)],  # nanoGPT's CPU config; HF's gpt2
)
def test_lm_parameter_counts(overrides: tuple[str, ...], vocab: int, context: int, params: int) -> None:
    model_fn = instantiate(_model_config("transformer_lm", *overrides), _partial_=True)
    model = nnx.eval_shape(lambda: model_fn(vocab_size=vocab, max_len=context, rngs=rngs()))
    assert sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))) == params


def _preset(name: str, **sizes: int) -> dict:
    return {**yaml.safe_load((ROOT / "conf" / "mesh" / f"{name}.yaml").read_text()), **sizes}


def test_tensor_parallel_rules_split_heads_mlps_and_hidden_units() -> None:
    mesh = AbstractMesh((1, 1, 4), AXES)
    rules = compile_rules(_preset("tensor_parallel")["rules"])
    spec = lambda path, shape: leaf_spec(f"params/{path}", shape, rules, mesh)
    block = "transformer/blocks/0"
    assert spec(f"{block}/attention/qkv/kernel", (16, 3, 4, 4)) == P(None, None, "tensor", None)
    assert spec(f"{block}/attention/qkv/bias", (3, 4, 4)) == P(None, "tensor", None)
    assert spec(f"{block}/attention/out/kernel", (4, 4, 16)) == P("tensor", None, None)
    assert spec(f"{block}/mlp/up/kernel", (16, 64)) == P(None, "tensor")
    assert spec(f"{block}/mlp/down/kernel", (64, 16)) == P("tensor", None)
    assert spec(f"{block}/norm1/scale", (16,)) == P()
    assert spec("embed/embedding", (65, 16)) == P(None, "tensor")  # any vocabulary size
    assert spec("encoder/layers/0/backward/recurrent/kernel", (8, 4, 8)) == P(None, None, "tensor")
    assert spec("encoder/layers/1/forward/input/bias", (3, 8)) == P(None, "tensor")


MESHES = {"fsdp": {"data": 4, "fsdp": 2}, "tensor_parallel": {"data": 2, "tensor": 4}}
SHARDED = ["vit", "lstm_tokens_bi", "rnn_regressor", "transformer_cls_rotary", "embed_pool", "lm_untied"]


def _forward_on_meshes(name: str) -> dict:
    """One model's eval forward on one device, then on each mesh preset: the largest difference."""
    from research.engine.sharding import batch_sharding, make_mesh, state_shardings

    model = built(lambda: build(name))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = {"params": nnx.to_pure_dict(params), "model_state": nnx.to_pure_dict(rest)}
    forward = jax.jit(lambda s, *xs: nnx.merge(graphdef, s["params"], s["model_state"])(*xs))
    single = np.asarray(forward(jax.device_put(state, jax.devices()[0]), *inputs(name)))
    out = {}
    for preset, sizes in MESHES.items():
        cfg = _preset(preset, **sizes)
        mesh = make_mesh(cfg)
        placed = jax.device_put(state, state_shardings(mesh, state, cfg["rules"]))
        xs = [jax.device_put(x, batch_sharding(mesh, x.shape, 0)) for x in inputs(name)]
        leaves = jax.tree_util.tree_leaves(placed["params"])
        out[preset] = {
            "max_diff": float(np.abs(np.asarray(forward(placed, *xs)) - single).max()),
            "scale": float(np.abs(single).max()),
            "split": sum(any(leaf.sharding.spec) for leaf in leaves),
        }
    return out


def sharded_forwards() -> dict:
    """Child process (8 CPU devices): a model of each family on every mesh of ``MESHES``."""
    return {name: _forward_on_meshes(name) for name in SHARDED}


@pytest.fixture(scope="module")
def mesh_results() -> dict:
    code = (
        "import json, jax; jax.config.update('jax_num_cpu_devices', 8)\n"
        "from tests.test_models_zoo import sharded_forwards\n"
        "print(json.dumps(sharded_forwards()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("mesh", list(MESHES))
@pytest.mark.parametrize("name", SHARDED)
def test_sharded_forward_matches_one_device(mesh_results: dict, name: str, mesh: str) -> None:
    result = mesh_results[name][mesh]
    assert result["max_diff"] <= 1e-5 * max(1.0, result["scale"]), result
    assert result["split"] >= 3, result  # the rules really split this model's parameters
