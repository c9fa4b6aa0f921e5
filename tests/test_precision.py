"""Mixed precision: layers compute in the policy's dtype, parameters stay float32, float16 is loss-scaled."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import compose_train
from research.errors import ConfigError
from research.experiment import build
from research.models.cnn import CNN
from research.precision import Policy, check_task_supports, keep_if_finite, value_and_grad

FLOAT16 = {"initial": 2.0**15, "growth_interval": 2, "growth_factor": 2.0, "backoff_factor": 0.5}


def matmul_dtypes(fn, *args) -> list[str]:
    """The operand dtypes of every conv and matmul in ``fn``'s program."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [
        str(v.aval.dtype)
        for e in jaxpr.eqns
        if e.primitive.name in ("conv_general_dilated", "dot_general")
        for v in e.invars
    ]


def test_bfloat16_policy_computes_every_layer_in_bfloat16_and_keeps_float32_state() -> None:
    model = Policy(compute="bfloat16").apply(
        CNN((8, 8, 1), 10, channels=[8, 16], dense_sizes=[32], batch_norm=True, rngs=nnx.Rngs(0))
    )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def forward(params, rest, x):
        m = nnx.merge(graphdef, params, rest)
        return m(x), nnx.state(m, nnx.BatchStat)

    dtypes = matmul_dtypes(forward, params, rest, jnp.ones((4, 8, 8, 1)))
    assert len(dtypes) == 8 and set(dtypes) == {"bfloat16"}  # 2 convs, 2 dense layers: both operands
    assert {str(p.dtype) for p in jax.tree.leaves(params)} == {"float32"}
    _, stats = jax.eval_shape(forward, params, rest, jnp.ones((4, 8, 8, 1)))
    assert {str(s.dtype) for s in jax.tree.leaves(stats)} == {"float32"}


def test_float32_policy_leaves_the_model_alone() -> None:
    model = Policy().apply(CNN((8, 8, 1), 10, channels=[8], rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    assert set(matmul_dtypes(lambda s, x: nnx.merge(graphdef, s)(x), state, jnp.ones((2, 8, 8, 1)))) == {
        "float32"
    }


def digits_task(precision: str):
    cfg = compose_train(
        [
            "logger=none",
            f"precision={precision}",
            "model.hidden_sizes=[64]",
            "optimizer/schedule=constant",
            "optimizer.learning_rate=1e-2",
        ]
    )
    built = build(cfg)
    task, dataset = built.task, built.dataset
    batch = {k: v[:64] for k, v in dataset.splits["train"].arrays().items()}
    return task, batch


def test_bfloat16_through_the_build_step_trains_close_to_float32() -> None:
    losses = {}
    for precision in ("float32", "bfloat16"):
        task, batch = digits_task(precision)
        state = task.init(jax.random.PRNGKey(0), batch)
        step = jax.jit(task.train_step)
        first = [float(step(state, batch)[1]["loss"])]
        for _ in range(20):
            state, metrics = step(state, batch)
        losses[precision] = (first[0], float(metrics["loss"]))
        assert {str(p.dtype) for p in jax.tree.leaves(state["params"])} == {"float32"}
    (f32_first, f32_last), (bf16_first, bf16_last) = losses["float32"], losses["bfloat16"]
    assert bf16_first == pytest.approx(f32_first, rel=2e-2) and bf16_first != f32_first
    assert bf16_last < 0.5 * bf16_first and bf16_last == pytest.approx(f32_last, rel=0.1, abs=0.02)


def test_loss_scaling_rescues_float16_gradients_that_would_flush_to_zero() -> None:
    policy = Policy(compute="float16", loss_scale=FLOAT16)
    w = jnp.ones(4, jnp.float32)

    def loss(w):  # gradient 1e-8 per element: below float16's smallest subnormal (6e-8)
        return jnp.sum(w.astype(jnp.float16) * jnp.float16(1e-4) * jnp.float16(1e-4)).astype(jnp.float32)

    (_, plain), _, _ = value_and_grad(loss, w, None)
    (_, scaled), scale, finite = value_and_grad(loss, w, policy.dynamic_scale())
    assert float(jnp.abs(plain).max()) == 0.0
    np.testing.assert_allclose(scaled, 1e-8, rtol=2e-2)
    assert bool(finite) and scaled.dtype == jnp.float32 and int(scale.fin_steps) == 1


def test_overflow_skips_the_update_and_halves_the_scale() -> None:
    policy = Policy(compute="float16", loss_scale=FLOAT16)
    old = {"w": jnp.ones(3), "rng": jax.random.key(0)}

    def loss(w):  # 100 * 2^15 overflows float16 (max 65504)
        return jnp.sum(w.astype(jnp.float16) * jnp.float16(100.0)).astype(jnp.float32)

    (_, grads), scale, finite = value_and_grad(loss, old["w"], policy.dynamic_scale())
    assert not bool(finite) and float(scale.scale) == 2.0**14
    new = {"w": old["w"] - grads, "rng": jax.random.key(1)}
    kept = keep_if_finite(finite, new, old)
    np.testing.assert_array_equal(kept["w"], old["w"])
    np.testing.assert_array_equal(jax.random.key_data(kept["rng"]), jax.random.key_data(old["rng"]))
    assert keep_if_finite(None, new, old) is new


def test_the_scale_grows_after_growth_interval_finite_steps() -> None:
    scale = Policy(compute="float16", loss_scale=FLOAT16).dynamic_scale()
    for _ in range(FLOAT16["growth_interval"] + 1):
        _, scale, _ = value_and_grad(lambda w: jnp.sum(w), jnp.ones(2), scale)
    assert float(scale.scale) == 2.0**16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compute": "float8"}, "precision.compute='float8'"),
        ({"compute": "float16"}, "needs precision.loss_scale"),
    ],
)
def test_bad_policies_fail_with_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy(**kwargs)


def test_float16_needs_a_task_that_applies_loss_scaling() -> None:
    def old_task(model, make_optimizer, total_steps, dataset):
        del model, make_optimizer, total_steps, dataset

    def new_task(model, make_optimizer, total_steps, dataset, precision=None):
        del model, make_optimizer, total_steps, dataset, precision

    float16 = Policy(compute="float16", loss_scale=FLOAT16)
    with pytest.raises(ConfigError, match="old_task does not apply loss scaling"):
        check_task_supports(functools.partial(old_task), float16)
    assert check_task_supports(new_task, float16)
    assert not check_task_supports(old_task, Policy(compute="bfloat16"))


def test_float16_classification_is_loss_scaled_and_learns() -> None:
    """precision=float16 via the build step: a dynamic loss scale in the state, float32 params, learning."""
    task, batch = digits_task("float16")
    state = task.init(jax.random.PRNGKey(0), batch)
    assert "loss_scale" in state and float(state["loss_scale"].scale) > 1
    step = jax.jit(task.train_step)
    first = float(step(state, batch)[1]["loss"])
    for _ in range(30):
        state, metrics = step(state, batch)
    assert {str(p.dtype) for p in jax.tree.leaves(state["params"])} == {"float32"}
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) < 0.5 * first
