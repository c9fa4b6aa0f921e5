"""ClassificationTask: learns a separable problem, jits with donation, masks eval padding, survives Orbax."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from research.data.base import EVAL_WEIGHT, Dataset
from research.errors import ConfigError
from research.models.cnn import CNN
from research.models.mlp import MLP
from research.optim import make_optimizer
from research.tasks.classification import ClassificationTask

NUM_CLASSES, DIM = 3, 4


def identity_transform(rng, batch, train):
    return batch


def toy_dataset(input_shape=(DIM,)) -> Dataset:
    return Dataset("toy", input_shape, NUM_CLASSES, {}, identity_transform, 32, 32)


def blobs(n: int, seed: int):
    """Three well-separated Gaussian blobs in DIM dimensions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    centres = 3.0 * np.eye(NUM_CLASSES, DIM)
    images = centres[labels] + rng.normal(size=(n, DIM))
    return {"image": jnp.asarray(images, jnp.float32), "label": jnp.asarray(labels)}


def make_task(model=None, optimizer=None, total_steps=300, dataset=None, **kwargs):
    model = model or functools.partial(MLP, hidden_sizes=[32], dropout=0.1)
    optimizer = optimizer or {"_target_": "optax.adam", "learning_rate": 1e-2}
    return ClassificationTask(
        model, functools.partial(make_optimizer, optimizer), total_steps, dataset or toy_dataset(), **kwargs
    )


def train(task, state, data, steps, batch_size=32):
    """``steps`` train steps over random batches of ``data``, in one compiled scan."""
    idx = jax.random.randint(jax.random.PRNGKey(1), (steps, batch_size), 0, data["label"].shape[0])

    def body(s, i):
        return task.train_step(s, jax.tree.map(lambda a: a[i], data))

    return jax.jit(lambda s: jax.lax.scan(body, s, idx))(state)


def test_trains_a_tiny_mlp_to_high_accuracy():
    task = make_task()
    data, test = blobs(512, seed=0), blobs(256, seed=1)
    state = task.init(jax.random.PRNGKey(0), None)
    state, metrics = train(task, state, data, steps=300)
    assert int(state["step"]) == 300
    assert float(metrics["loss"][-20:].mean()) < float(metrics["loss"][:20].mean())
    result = task.finalize(jax.jit(task.eval_step)(state, {**test, EVAL_WEIGHT: jnp.ones(256)}))
    assert float(result["accuracy"]) > 0.95
    assert float(result["f1"]) > 0.95
    assert result["confusion_matrix"].shape == (NUM_CLASSES, NUM_CLASSES)


def test_train_step_jits_with_donated_state_and_advances_rng_streams():
    task = make_task(optimizer={"_target_": "optax.sgd", "learning_rate": 0.1, "momentum": 0.9})
    batch = blobs(32, seed=0)
    step = jax.jit(task.train_step, donate_argnums=0)
    state = task.init(jax.random.PRNGKey(0), batch)
    first_kernel = np.array(state["params"]["head"]["kernel"])
    state, _ = step(state, batch)
    old = state
    state, metrics = step(state, batch)
    assert int(state["step"]) == 2 and np.isfinite(float(metrics["loss"]))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old["params"]))  # donated, reused
    assert not np.allclose(state["params"]["head"]["kernel"], first_kernel)
    assert int(state["model_state"]["dropout"]["rngs"]["count"]) == 2  # one dropout draw per step


def test_eval_ignores_padding_and_dropout():
    task = make_task(model=functools.partial(MLP, hidden_sizes=[32], dropout=0.5))
    state = task.init(jax.random.PRNGKey(0), None)
    batch = blobs(40, seed=3)
    mask = jnp.concatenate([jnp.ones(25), jnp.zeros(15)])
    sums = jax.jit(task.eval_step)(state, {**batch, EVAL_WEIGHT: mask})
    again = jax.jit(task.eval_step)(state, {**batch, EVAL_WEIGHT: mask})
    np.testing.assert_array_equal(sums["loss_sum"], again["loss_sum"])  # no dropout in eval
    assert float(sums["count"]) == 25 and float(sums["confusion"].sum()) == 25

    model = nnx.merge(task.eval_graphdef, state["params"], state["model_state"])
    logits = model(batch["image"][:25])
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"][:25]).sum()
    assert float(sums["loss_sum"]) == pytest.approx(float(expected), rel=1e-5)


def test_label_smoothing_mixes_in_the_uniform_cross_entropy():
    alpha = 0.2
    plain, smooth = make_task(), make_task(label_smoothing=alpha)
    batch = blobs(32, seed=0)
    state = plain.init(jax.random.PRNGKey(0), None)
    model = nnx.merge(plain.eval_graphdef, state["params"], state["model_state"])
    log_p = jax.nn.log_softmax(model(batch["image"]))
    nll = -jnp.take_along_axis(log_p, batch["label"][:, None], axis=1)[:, 0]
    expected = (1 - alpha) * nll - alpha * log_p.mean(axis=1)
    np.testing.assert_allclose(smooth.loss(model(batch["image"]), batch["label"]), expected, rtol=1e-5)
    np.testing.assert_allclose(plain.loss(model(batch["image"]), batch["label"]), nll, rtol=1e-5)
    with pytest.raises(ConfigError, match="label_smoothing"):
        make_task(label_smoothing=1.0)


def test_batch_norm_statistics_update_in_train_steps():
    cnn = functools.partial(CNN, channels=[4], dense_sizes=[], batch_norm=True, batch_norm_momentum=0.5)
    task = make_task(model=cnn, dataset=toy_dataset((4, 4, 1)))
    images = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 1)) + 3.0
    batch = {"image": images, "label": jnp.zeros(8, jnp.int32)}
    state = task.init(jax.random.PRNGKey(0), batch)
    mean = lambda s: np.array(s["model_state"]["blocks"][0]["norm"]["mean"])
    before = mean(state)
    state, _ = jax.jit(task.train_step)(state, batch)
    assert not np.allclose(mean(state), before)


def test_freeze_by_path_keeps_nnx_params_bit_identical():
    optimizer = {"_target_": "optax.adam", "learning_rate": 1e-2, "freeze": ["^hidden/0/"]}
    task = make_task(optimizer=optimizer)
    state = task.init(jax.random.PRNGKey(0), None)
    frozen = np.array(state["params"]["hidden"][0]["kernel"])
    head = np.array(state["params"]["head"]["kernel"])
    state, _ = train(task, state, blobs(64, seed=0), steps=5)
    np.testing.assert_array_equal(state["params"]["hidden"][0]["kernel"], frozen)
    assert not np.allclose(state["params"]["head"]["kernel"], head)


def test_vmapped_seeds_train_independent_replicas():
    """Replica i of the vmapped program is the run of seed key i on its own, and the two differ."""
    task = make_task()
    batch = blobs(32, seed=0)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    two_steps = lambda s: jax.lax.scan(lambda s, _: task.train_step(s, batch), s, None, length=2)
    init = lambda key: task.init(key, batch)
    states, metrics = jax.jit(jax.vmap(lambda k: two_steps(init(k))))(keys)
    assert metrics["loss"].shape == (2, 2) and not np.allclose(metrics["loss"][0], metrics["loss"][1])
    as_data = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    run_alone = jax.jit(lambda k: two_steps(init(k)))
    for i, key in enumerate(keys):
        alone, alone_metrics = run_alone(key)
        np.testing.assert_allclose(metrics["loss"][i], alone_metrics["loss"], rtol=1e-5)
        for v, a in zip(jax.tree.leaves(states), jax.tree.leaves(alone), strict=True):
            np.testing.assert_allclose(as_data(v)[i], as_data(a), rtol=1e-5, atol=1e-6)


def test_state_round_trips_through_orbax(tmp_path):
    import orbax.checkpoint as ocp

    task = make_task()
    state = task.init(jax.random.PRNGKey(0), None)
    state, _ = jax.jit(task.train_step)(state, blobs(32, seed=0))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
    target = jax.eval_shape(task.init, jax.random.PRNGKey(0), None)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "state", target)

    as_data = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(as_data(a), as_data(b)), state, restored)
    assert jax.tree.structure(state) == jax.tree.structure(restored)
    _, metrics = jax.jit(task.train_step)(restored, blobs(32, seed=0))
    assert np.isfinite(float(metrics["loss"]))


def test_classification_needs_a_dataset():
    with pytest.raises(ConfigError, match="needs a dataset"):
        ClassificationTask(
            MLP,
            functools.partial(make_optimizer, {"_target_": "optax.adam", "learning_rate": 1e-3}),
            10,
            None,
        )
