"""MLP, CNN and ResNet: shapes, sizes, activations by name (against jax.nn), train/eval behaviour
of dropout and batch norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from research.config import CONF_DIR
from research.errors import ConfigError
from research.models.cnn import CNN
from research.models.layers import ACTIVATIONS
from research.models.mlp import MLP
from research.models.resnet import ResNet

CONF = str(CONF_DIR)
IMAGE = (8, 8, 1)


def images(n: int, seed: int = 0) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), (n, *IMAGE))


def rngs(seed: int = 0) -> nnx.Rngs:
    return nnx.Rngs(params=seed, dropout=seed + 1)


# What each activation name must compute, from jax.nn itself.
REFERENCE_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "tanh": jax.nn.tanh,
    "sigmoid": jax.nn.sigmoid,
    "leaky_relu": jax.nn.leaky_relu,
}


def test_every_activation_has_a_reference():
    assert set(ACTIVATIONS) == set(REFERENCE_ACTIVATIONS)


@pytest.mark.parametrize("activation", sorted(REFERENCE_ACTIVATIONS))
def test_each_activation_computes_its_jax_nn_function(activation):
    """The MLP's output equals the forward pass written out with the jax.nn function of that name."""
    mlp = MLP(IMAGE, 10, [16, 8], activation, rngs=rngs())
    x = images(3)
    h = x.reshape(3, -1)
    for layer in mlp.hidden:
        h = REFERENCE_ACTIVATIONS[activation](h @ layer.kernel[...] + layer.bias[...])
    expected = h @ mlp.head.kernel[...] + mlp.head.bias[...]
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-5, atol=1e-6)
    # The CNN takes the same names; abstract evaluation checks it builds and runs with each.
    cnn = lambda x: CNN(IMAGE, 7, [4, 8], 3, "avg", 2, 2, [16], activation, rngs=rngs())(x)
    assert jax.eval_shape(cnn, jax.ShapeDtypeStruct((3, *IMAGE), jnp.float32)).shape == (3, 7)


def test_unknown_activation_names_the_valid_ones():
    with pytest.raises(ConfigError, match="gelu, leaky_relu, relu, sigmoid, tanh"):
        MLP(IMAGE, 10, [16], "swish", rngs=rngs())


def test_cnn_rejects_pooling_below_one_pixel_and_bad_rates():
    with pytest.raises(ConfigError, match="below 1 pixel"):
        CNN(IMAGE, 10, [4, 4, 4, 4], rngs=rngs())
    with pytest.raises(ConfigError, match="model.pool"):
        CNN(IMAGE, 10, [4], pool="median", rngs=rngs())
    with pytest.raises(ConfigError, match="dropout"):
        MLP(IMAGE, 10, [16], dropout=1.0, rngs=rngs())


def test_dropout_is_active_only_in_train_mode():
    model = MLP(IMAGE, 10, [256], dropout=0.5, rngs=rngs())
    x = images(4)
    hidden = lambda m: m.activation(m.hidden[0](x.reshape(4, -1)))
    model.train()
    first, second = model(x), model(x)
    assert not np.allclose(first, second)  # a fresh mask per call
    active = np.asarray(hidden(model)) != 0
    dropped = np.asarray(model.dropout(hidden(model)))
    assert 0.35 < np.mean(dropped[active] == 0) < 0.65  # rate 0.5 of the active units
    model.eval()
    reference = model.head(hidden(model))
    np.testing.assert_allclose(model(x), reference, rtol=1e-6)
    np.testing.assert_array_equal(model(x), model(x))


def test_batch_norm_updates_stats_in_train_and_uses_them_in_eval():
    model = CNN(IMAGE, 10, [4], batch_norm=True, batch_norm_momentum=0.5, rngs=rngs())
    x = images(16) * 3.0 + 2.0
    stats = lambda: jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
    before = stats()
    model.train()
    batch_out, single_out = model(x), model(x[:1])
    # Train mode normalises with the batch's statistics: an example's output depends on its batch.
    assert not np.allclose(batch_out[:1], single_out, atol=1e-4)
    after = stats()
    assert not np.allclose(before["blocks"][0]["norm"]["mean"], after["blocks"][0]["norm"]["mean"])

    model.eval()
    out = model(x)
    np.testing.assert_allclose(out[:1], model(x[:1]), rtol=1e-5, atol=1e-6)  # running stats: per example
    jax.tree.map(np.testing.assert_array_equal, stats(), after)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_configs_instantiate_with_listconfig_args(name):
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose(f"model/{name}")
    model_fn = instantiate(cfg.model, _partial_=True)  # list args arrive as ListConfig
    forward = lambda x: model_fn(input_shape=IMAGE, num_outputs=3, rngs=rngs())(x)
    assert jax.eval_shape(forward, jax.ShapeDtypeStruct((2, *IMAGE), jnp.float32)).shape == (2, 3)


def _resnet_config(**overrides) -> dict:
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("model/resnet")
    kwargs = {k: v for k, v in cfg.model.items() if k != "_target_"}
    return {**kwargs, **overrides}


IMAGENET = {"stem": "imagenet", "stem_width": 64, "widths": [64, 128, 256, 512]}


@pytest.mark.parametrize(
    "overrides, image, classes, params",
    [
        ({}, (32, 32, 3), 10, 272_474),  # CIFAR ResNet-20 with projection shortcuts (option A: 269,722)
        ({**IMAGENET, "stage_sizes": [2, 2, 2, 2]}, (64, 64, 3), 1000, 11_689_512),  # torchvision resnet18
        (
            {**IMAGENET, "stage_sizes": [3, 4, 6, 3], "block": "bottleneck"},
            (64, 64, 3),
            1000,
            25_557_032,  # torchvision resnet50
        ),
    ],
)
def test_resnets_have_the_published_parameter_counts(overrides, image, classes, params):
    # Abstract: shapes only, so ResNet-50 costs nothing to build or run here.
    build = lambda: ResNet(image, classes, **_resnet_config(**overrides), rngs=rngs())
    model = nnx.eval_shape(build)
    assert sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))) == params
    out = jax.eval_shape(lambda x: build()(x), jax.ShapeDtypeStruct((2, *image), jnp.float32))
    assert out.shape == (2, classes)


def test_resnet_blocks_start_as_identity_with_zero_init_residual():
    model = ResNet(
        (8, 8, 1), 3, **_resnet_config(zero_init_residual=True, stage_sizes=[1, 1, 1]), rngs=rngs()
    )
    block = model.stages[0][0]  # no shortcut conv: same width, stride 1
    assert block.shortcut is None
    x = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 16)))
    np.testing.assert_allclose(block(x), x, atol=1e-6)


def test_resnet_rejects_mismatched_stages_and_unknown_blocks():
    with pytest.raises(ConfigError, match="model.stage_sizes"):
        ResNet((8, 8, 1), 3, **_resnet_config(stage_sizes=[1, 1]), rngs=rngs())
    with pytest.raises(ConfigError, match="model.block"):
        ResNet((8, 8, 1), 3, **_resnet_config(block="wide"), rngs=rngs())
