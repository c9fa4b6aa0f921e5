"""The matmul forms of convolution and max pooling equal the XLA operations (values and
gradients), and the CNN gives the same outputs with either implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.errors import ConfigError
from research.models.autoencoder import conv_autoencoder
from research.models.cnn import CNN
from research.models.conv import im2col_conv, im2col_conv_general_dilated, tiled_max_pool
from research.models.resnet import ResNet

TOL = {"rtol": 1e-4, "atol": 1e-4}


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def xla_conv(x, w, strides=(1, 1), padding="SAME"):
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dims, precision="highest")


def values_and_grads(conv, x, w):
    """conv(x, w) and the gradients of a non-linear function of it with respect to x and w."""
    return conv(x, w), jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=(0, 1))(x, w)


@pytest.mark.parametrize(
    "kernel, strides, padding",
    [
        ((3, 3), (1, 1), "SAME"),
        ((5, 5), (1, 1), "SAME"),
        ((2, 2), (1, 1), "SAME"),  # even: XLA puts the extra row and column after
        ((1, 3), (1, 1), "VALID"),
        ((3, 3), (2, 2), "SAME"),  # ResNet's and the autoencoder's strided convs
        ((1, 1), (2, 2), "VALID"),
        ((4, 4), (4, 4), "VALID"),  # a ViT patch embedding
        ((3, 3), (2, 1), ((2, 0), (1, 3))),
    ],
)
def test_im2col_equals_lax_conv(kernel, strides, padding):
    x, w = normal(0, (2, 9, 8, 3)), normal(1, (*kernel, 3, 5))
    with jax.default_matmul_precision("highest"):
        ours = values_and_grads(lambda x, w: im2col_conv(x, w, strides, padding), x, w)
    theirs = values_and_grads(lambda x, w: xla_conv(x, w, strides, padding), x, w)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("options", [{"strides": 2}, {"kernel_dilation": 2}, {"feature_group_count": 3}])
def test_nnx_conv_hook_covers_plain_convs_and_falls_back_for_the_others(options):
    x = normal(0, (2, 9, 8, 3))
    make = lambda fn: nnx.Conv(3, 6, (3, 3), conv_general_dilated=fn, rngs=nnx.Rngs(0), **options)
    with jax.default_matmul_precision("highest"):
        ours = make(im2col_conv_general_dilated)(x)
    np.testing.assert_allclose(ours, make(jax.lax.conv_general_dilated)(x), **TOL)


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 3)])  # the second has ragged edges
def test_tiled_max_pool_equals_reduce_window(shape):
    x = normal(0, shape)
    window = lambda x: nnx.max_pool(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(tiled_max_pool(x, 2), window(x))
    grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) ** 2))(x)
    np.testing.assert_array_equal(grad(lambda x: tiled_max_pool(x, 2)), grad(window))


def test_cnn_gives_the_same_outputs_and_state_with_either_implementation():
    x = normal(2, (4, 12, 12, 1))
    make = lambda **impl: CNN(
        (12, 12, 1), 5, [4, 8], batch_norm=True, dense_sizes=[16], **impl, rngs=nnx.Rngs(0)
    )
    fast, xla = make(conv_impl="im2col", pool_impl="reshape"), make(conv_impl="xla", pool_impl="window")
    assert jax.tree.structure(nnx.state(fast)) == jax.tree.structure(nnx.state(xla))
    np.testing.assert_allclose(fast(x), xla(x), **TOL)


def test_the_conv_autoencoder_and_gan_players_give_the_same_outputs_with_either_implementation():
    """ConvEncoder's strided convs and ConvDecoder's upsampling convs (the VAE's, the DCGAN's)."""
    x = normal(3, (4, 8, 8, 1))
    make = lambda impl: conv_autoencoder((8, 8, 1), 3, [4, 8], conv_impl=impl, rngs=nnx.Rngs(0))
    fast, xla = make("im2col"), make("xla")
    assert jax.tree.structure(nnx.state(fast)) == jax.tree.structure(nnx.state(xla))
    np.testing.assert_allclose(fast.encode(x), xla.encode(x), **TOL)
    z = normal(4, (4, 3))
    np.testing.assert_allclose(fast.decode(z), xla.decode(z), **TOL)


def resnet(stem: str, conv_impl: str) -> ResNet:
    return ResNet((16, 16, 3), 5, [1, 1], [4, 8], "basic", stem, 4, "relu", 0.9, 1e-5, False,
                  conv_impl=conv_impl, rngs=nnx.Rngs(0))  # fmt: skip


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_the_resnet_gives_the_same_outputs_and_gradients_with_either_implementation(stem):
    """Its strided 3x3 / 7x7 convs and 1x1 shortcuts; the gradients are what the scan made slow."""
    x = normal(5, (4, 16, 16, 3))
    fast, xla = resnet(stem, "im2col"), resnet(stem, "xla")
    assert jax.tree.structure(nnx.state(fast)) == jax.tree.structure(nnx.state(xla))
    np.testing.assert_allclose(fast(x), xla(x), **TOL)
    grad = lambda model: nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))))(model)  # noqa: E731
    for g_fast, g_xla in zip(jax.tree.leaves(grad(fast)), jax.tree.leaves(grad(xla)), strict=True):
        np.testing.assert_allclose(g_fast, g_xla, **TOL)


def test_unknown_implementations_are_config_errors():
    with pytest.raises(ConfigError, match="model.conv_impl='fft'"):
        CNN((8, 8, 1), 10, [4], conv_impl="fft", rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.pool_impl"):
        CNN((8, 8, 1), 10, [4], pool_impl="median", rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.conv_impl='fft'"):
        conv_autoencoder((8, 8, 1), 3, [4], conv_impl="fft", rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.conv_impl='fft'"):
        resnet("cifar", "fft")
