"""GAN: the losses by hand, both players updated in one step, and a bit-identical resume."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.engine.init_from import read_arrays
from research.errors import ConfigError
from research.models.gan import DenseDiscriminator, dense_generator, discriminator, generator
from research.tasks.gan import GANTask, d_losses, g_losses
from tests.conftest import TINY, run_train
from tests.test_autoencoder import image_data


def test_the_losses_by_hand() -> None:
    real, fake = jnp.array([2.0]), jnp.array([-1.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    ns = -math.log(sig(2.0)) - math.log(1 - sig(-1.0))
    assert float(d_losses(real, fake, "non_saturating")[0]) == pytest.approx(ns, rel=1e-6)
    assert float(g_losses(fake, "non_saturating")[0]) == pytest.approx(-math.log(sig(-1.0)), rel=1e-6)
    assert float(d_losses(real, fake, "hinge")[0]) == 0.0  # both beyond the margin
    assert float(d_losses(jnp.array([0.5]), jnp.array([0.5]), "hinge")[0]) == pytest.approx(0.5 + 1.5)
    assert float(g_losses(fake, "hinge")[0]) == 1.0


def make_task(conditional: bool, **kwargs) -> GANTask:
    models = {
        "generator": functools.partial(generator, channels=[4], kernel_size=3),
        "discriminator": functools.partial(discriminator, channels=[4], kernel_size=3),
    }
    optimizers = {"generator": lambda n: optax.adam(1e-3), "discriminator": lambda n: optax.sgd(1e-2)}
    return GANTask(
        models, optimizers, 10, image_data(), noise_dim=5, conditional=conditional, grid_rows=2, **kwargs
    )


def test_the_r1_penalty_is_the_squared_input_gradient_and_joins_only_the_discriminator_loss() -> None:
    """For D(x) = w.x + b the penalty is |w|^2 for every image; gamma/2 of it is added to d_loss."""
    task = make_task(False, r1_gamma=4.0)
    state = task.init(jax.random.PRNGKey(0), None)
    real = jnp.asarray(image_data().splits["train"].arrays()["image"][:8], jnp.float32)
    linear = lambda images: images.reshape(len(images), -1) @ jnp.arange(64.0) / 64  # noqa: E731
    task.discriminate = lambda d, images, labels: linear(images)
    assert float(task.r1_penalty(state["discriminator"], real, None)) == pytest.approx(
        float(jnp.sum((jnp.arange(64.0) / 64) ** 2)), rel=1e-5
    )
    plain = make_task(False)
    batch = {"image": real, "label": jnp.zeros(8, jnp.int32)}
    _, with_r1 = jax.jit(make_task(False, r1_gamma=4.0).train_step)(state, batch)
    _, without = jax.jit(plain.train_step)(state, batch)
    assert float(with_r1["d_loss"]) > float(without["d_loss"])  # the penalty at the real images
    assert float(with_r1["g_loss"]) != float(without["g_loss"])  # D moved differently, G's step follows it
    with pytest.raises(ConfigError, match="task.r1_gamma"):
        make_task(False, r1_gamma=-1.0)


@pytest.mark.parametrize("conditional", [False, True])
def test_one_step_updates_both_players_with_their_own_optimizers(conditional: bool) -> None:
    task = make_task(conditional)
    state = task.init(jax.random.PRNGKey(0), None)
    batch = {
        "image": jnp.asarray(image_data().splits["train"].arrays()["image"][:8]),
        "label": jnp.arange(8) % 2,
    }
    new, metrics = jax.jit(task.train_step)(state, batch)
    assert set(metrics) == {"d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy"} >= set(task.finite)
    for player in ("generator", "discriminator"):
        changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new[player], state[player])
        assert all(jax.tree.leaves(changed)), player
    assert int(new["g_opt_state"][0].count) == 1  # Adam's moments for the generator; SGD keeps none
    samples = jax.jit(task.samples)(new)["samples"]
    assert samples.shape == (2 * 2, 8, 8, 1)  # two rows of two (classes, when conditional)
    assert float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0


def test_dense_players_read_the_class_once_and_train_in_the_task() -> None:
    """The MLP discriminator sees the pixels, and the class through its projection onto the features."""
    from flax import nnx

    d = DenseDiscriminator((8, 8, 1 + 2), [6], image_channels=1, rngs=nnx.Rngs(0))
    assert d.layers[0].in_features == 8 * 8 and d.embed.in_features == 2
    models = {
        "generator": functools.partial(dense_generator, hidden_sizes=[6]),
        "discriminator": functools.partial(DenseDiscriminator, hidden_sizes=[6], image_channels=1),
    }
    optimizers = {"generator": lambda n: optax.adam(1e-3), "discriminator": lambda n: optax.adam(1e-3)}
    task = GANTask(models, optimizers, 10, image_data(), noise_dim=5, conditional=True, grid_rows=2)
    state = task.init(jax.random.PRNGKey(0), None)
    images = jnp.asarray(image_data().splits["train"].arrays()["image"][:4])
    by_class = [task.discriminate(state["discriminator"], images, jnp.full(4, c)) for c in (0, 1)]
    assert not np.allclose(by_class[0], by_class[1])  # the class reaches the logit
    drawn = task.sample_classes(state, jnp.array([0, 1, 1]), jax.random.PRNGKey(1))
    assert drawn.shape == (3, 8, 8, 1) and float(drawn.min()) >= 0.0 and float(drawn.max()) <= 1.0
    concat = DenseDiscriminator((8, 8, 1 + 2), [6], image_channels=1, conditioning="concat", rngs=nnx.Rngs(0))
    assert concat.layers[0].in_features == 8 * 8 + 2 and concat.embed is None
    with pytest.raises(ConfigError, match="image_channels"):
        DenseDiscriminator((8, 8, 3), [6], image_channels=4, rngs=nnx.Rngs(0))
    headed = dense_generator(7, (8, 8, 1), [6], head_channels=2, rngs=nnx.Rngs(0))
    assert headed(jnp.ones((3, 7))).shape == (3, 8, 8, 1) and headed.head.kernel.shape == (3, 3, 2, 1)


SMALL = ("task.models.generator.hidden_sizes=[8]", "task.models.discriminator.hidden_sizes=[8]",
         "data.batch_size=16", "trainer.steps_per_call=4", "trainer.eval_every=4",
         "trainer.checkpoint.every=4", *TINY)  # fmt: skip


@pytest.mark.slow
def test_a_gan_stopped_and_continued_ends_bit_identical(tmp_path: Path) -> None:
    """Both players and both optimizer states come back from the checkpoint."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    gan = functools.partial(run_train, "+experiment=digits_cgan", *SMALL)
    gan("trainer.max_steps=8", f"hydra.run.dir={straight}")
    gan("trainer.max_steps=4", f"hydra.run.dir={resumed}")
    proc = gan("trainer.max_steps=8", f"hydra.run.dir={resumed}")
    assert "resuming from step 4" in proc.stdout
    a, b = (
        read_arrays(straight / "checkpoints" / "8" / "state"),
        read_arrays(resumed / "checkpoints" / "8" / "state"),
    )
    assert a.keys() == b.keys() and any(k.startswith("d_opt_state") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert (straight / "plots" / "samples.png").stat().st_size > 0
