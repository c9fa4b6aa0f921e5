"""model.remat and model.scan_layers: one loss in every layout and policy; checkpoints across layouts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.errors import ConfigError
from research.models.resnet import ResNet
from research.models.stacking import REMAT_POLICIES, check_remat, layout_hint, to_layout
from research.models.transformer import TransformerClassifier, TransformerLM
from research.models.vit import ViT
from research.optim import param_path
from tests.conftest import ROOT, TINY, run_train, train_cmd

SIZE = {"dim": 16, "depth": 3, "num_heads": 2, "mlp_dim": 32}
RNG = np.random.default_rng(0)
TOKENS = jnp.asarray(RNG.integers(0, 11, (4, 8)), jnp.int32)
IMAGES = jnp.asarray(RNG.normal(size=(4, 8, 8, 1)), jnp.float32)
LABELS = jnp.asarray([0, 1, 2, 1])
MASK = jnp.asarray((np.arange(8)[None, :] < np.array([[8], [5], [3], [8]])).astype(np.float32))


def lm(scan: bool, remat: str, dropout: float = 0.0) -> TransformerLM:
    """``shakespeare_char_transformer``'s model at a tiny size."""
    return TransformerLM(
        11,
        8,
        **SIZE,
        dropout=dropout,
        positions="learned",
        tie_embeddings=True,
        scan_layers=scan,
        remat=remat,
        rngs=nnx.Rngs(params=0, dropout=1),
    )


def vit(scan: bool, remat: str) -> ViT:
    """``fashion_mnist_vit``'s model at a tiny size."""
    return ViT(
        (8, 8, 1),
        3,
        4,
        **SIZE,
        pool="cls",
        dropout=0.0,
        scan_layers=scan,
        remat=remat,
        rngs=nnx.Rngs(params=0, dropout=1),
    )


def encoder(scan: bool, remat: str) -> TransformerClassifier:
    """``imdb_transformer``'s model: padding masks ride through the scan."""
    return TransformerClassifier(
        11,
        3,
        8,
        **SIZE,
        dropout=0.0,
        pool="mean",
        positions="rotary",
        scan_layers=scan,
        remat=remat,
        rngs=nnx.Rngs(params=0, dropout=1),
    )


def lm_loss(model: nnx.Module) -> jax.Array:
    logits = model(TOKENS[:, :-1])
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), TOKENS[:, 1:, None], -1).mean()


def class_loss(model: nnx.Module, *inputs: jax.Array) -> jax.Array:
    return -jnp.take_along_axis(jax.nn.log_softmax(model(*inputs)), LABELS[:, None], -1).mean()


CASES = {
    "shakespeare_char_transformer": (lm, lm_loss),
    "fashion_mnist_vit": (vit, lambda m: class_loss(m, IMAGES)),
    "imdb_transformer": (encoder, lambda m: class_loss(m, TOKENS, MASK)),
}


def arrays(state: nnx.State) -> dict[str, np.ndarray]:
    """Path -> numpy array (RNG keys as their key data)."""

    def host(v: jax.Array) -> np.ndarray:
        return np.asarray(
            jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v
        )

    return {param_path(p): host(v) for p, v in jax.tree_util.tree_leaves_with_path(state)}


def in_layout(source: nnx.State, target: nnx.State) -> dict:
    """``source``'s parameters in ``target``'s layout (``to_layout``, as trainer.init_from does), as
    the pure dict a train step holds."""
    converted = to_layout(arrays(source), arrays(target).keys())
    pure = nnx.to_pure_dict(target)
    return jax.tree_util.tree_map_with_path(lambda p, leaf: jnp.asarray(converted[param_path(p)]), pure)


def sgd_losses(model: nnx.Module, params: dict, loss_fn, steps: int = 1) -> list[float]:
    """The loss before each of ``steps`` SGD steps and after the last, from a pure step that merges
    the model from plain arrays as the tasks do (research/tasks/supervised.py)."""
    graph, _, rest = nnx.split(model, nnx.Param, ...)
    rest = nnx.to_pure_dict(rest)

    @jax.jit
    def step(params: dict) -> tuple[jax.Array, dict]:
        loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graph, p, rest)))(params)
        return loss, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    losses = []
    for _ in range(steps):
        loss, params = step(params)
        losses.append(float(loss))
    losses.append(float(step(params)[0]))
    return losses


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layout_and_policy_trains_to_the_same_losses(case: str) -> None:
    """One initialisation, converted between layouts: the same loss before and after two SGD steps."""
    build, loss_fn = CASES[case]
    reference = build(False, "none")
    unrolled = nnx.state(reference, nnx.Param)
    expected = sgd_losses(reference, nnx.to_pure_dict(unrolled), loss_fn)
    assert expected[-1] < expected[0] - 1e-3  # the steps learn: a comparison of moving numbers
    for scan in (False, True):
        for remat in ("none", "full", "dots_saveable"):
            model = build(scan, remat)
            params = in_layout(unrolled, nnx.state(model, nnx.Param))
            got = sgd_losses(model, params, loss_fn)
            np.testing.assert_allclose(got, expected, rtol=2e-5, err_msg=f"scan_layers={scan} remat={remat}")


def test_scanned_blocks_stack_every_variable_over_a_layer_axis_and_draw_dropout_per_layer() -> None:
    model = lm(True, "full", dropout=0.5)
    stacked = arrays(nnx.state(model))
    assert stacked["transformer/blocks/attention/qkv/kernel"].shape == (3, 16, 3, 2, 8)
    assert not any("blocks/0/" in k for k in stacked)
    model.train()
    first, second = model(TOKENS), model(TOKENS)
    assert not np.allclose(first, second)  # the stacked streams advance: new masks each call
    counts = nnx.state(model, nnx.RngCount)["transformer"]["blocks"]["dropout"]["rngs"]["count"]
    np.testing.assert_array_equal(np.asarray(counts[...]), [4, 4, 4])  # two calls x two dropouts, per layer
    keys = stacked["transformer/blocks/dropout/rngs/key"]
    assert keys.shape[0] == 3 and len({tuple(k) for k in keys}) == 3  # each layer its own stream


def test_layouts_convert_both_ways_and_name_the_setting() -> None:
    unrolled = arrays(nnx.state(lm(False, "none"), nnx.Param))
    scanned_names = arrays(nnx.state(lm(True, "none"), nnx.Param)).keys()
    stacked = to_layout(unrolled, scanned_names)
    back = to_layout({k: stacked[k] for k in scanned_names}, unrolled.keys())
    for name, value in unrolled.items():
        np.testing.assert_array_equal(back[name], value)
    np.testing.assert_array_equal(
        stacked["transformer/blocks/mlp/up/kernel"][2], unrolled["transformer/blocks/2/mlp/up/kernel"]
    )
    assert layout_hint(unrolled, scanned_names) == "model.scan_layers=false"
    assert layout_hint(scanned_names, unrolled) == "model.scan_layers=true"
    assert layout_hint(unrolled, unrolled) is None
    deeper = arrays(
        nnx.state(TransformerLM(11, 8, 16, 4, 2, 32, 0.0, "learned", True, rngs=nnx.Rngs(0)), nnx.Param)
    )
    assert layout_hint(unrolled, deeper) is None  # another depth is not a layout question


def test_an_unknown_policy_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"model.remat='dots' is not one of: none, full, dots_saveable"
    ) as e:
        check_remat("dots")
    assert "\n" not in str(e.value)
    assert set(REMAT_POLICIES) >= {"none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable"}
    with pytest.raises(ConfigError, match="model.remat"):
        lm(True, "everything")


def test_rematerialised_resnet_blocks_keep_their_batch_statistics() -> None:
    """Batch norm inside nnx.remat: the same output, gradients and running averages as without."""

    def build(remat: str) -> ResNet:
        return ResNet(
            (8, 8, 3),
            3,
            [2, 1],
            [4, 8],
            "basic",
            "cifar",
            4,
            "relu",
            0.9,
            1e-5,
            False,
            "xla",
            remat=remat,
            rngs=nnx.Rngs(0),
        )

    images = jnp.asarray(RNG.normal(size=(4, 8, 8, 3)), jnp.float32)
    results = []
    for remat in ("none", "full"):
        model = build(remat)
        model.train()
        graph, params, rest = nnx.split(model, nnx.Param, ...)
        params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

        def loss(p, rest, graph=graph):
            m = nnx.merge(graph, p, rest)
            return class_loss(m, images), nnx.state(m, nnx.BatchStat)

        (value, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, rest)
        results.append((float(value), arrays(stats), arrays(grads)))
    (v0, s0, g0), (v1, s1, g1) = results
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    assert any(np.abs(s).max() > 0 for k, s in s0.items() if k.endswith("mean"))
    for name in s0:
        np.testing.assert_allclose(s1[name], s0[name], rtol=1e-5, atol=1e-7, err_msg=name)
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_a_run_saved_unrolled_is_refused_by_name_when_read_scanned_and_converted_by_init_from(
    tmp_path: Path,
) -> None:
    """evaluate with the other layout: one line naming model.scan_layers; init_from converts the
    layout, so a scanned, rematerialised run that does not move (every parameter frozen) scores the same."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First Citizen: before we proceed any further, hear me speak.\n" * 40)
    common = [
        "+experiment=shakespeare_char_transformer",
        "+debug=fast",
        "data=text_files",
        f"data.path={corpus}",
        "data.batch_size=4",
        "model.depth=2",
        "model.dim=16",
        "model.num_heads=2",
        "model.mlp_dim=32",
        *TINY,
    ]
    saved, loaded = tmp_path / "unrolled", tmp_path / "scanned"
    run_train(*common, f"hydra.run.dir={saved}", timeout=240, cwd=tmp_path)

    proc = subprocess.run(
        [*train_cmd()[:2], "research.evaluate", f"run={saved}", "model.scan_layers=true"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "model.scan_layers=false" in error[0], proc.stdout + proc.stderr

    proc = run_train(
        *common,
        "model.scan_layers=true",
        "model.remat=full",
        "optimizer.freeze=[.]",
        f"trainer.init_from.path={saved}",
        f"hydra.run.dir={loaded}",
        timeout=240,
        cwd=tmp_path,
    )
    assert "absent" not in proc.stdout and "loaded" in proc.stdout, proc.stdout
    before = json.loads((saved / "summary.json").read_text())
    after = json.loads((loaded / "summary.json").read_text())
    assert after["test/loss"] == pytest.approx(before["test/loss"], rel=1e-5)


def resnet(scan: bool, remat: str) -> nnx.Module:
    """A tiny CIFAR ResNet: a stage of one block, then one of three (a first and two identical)."""
    return ResNet(
        (8, 8, 1), 3, [1, 3], [4, 8], "basic", "cifar", 4, "relu", 0.9, 1e-5, False,
        remat=remat, scan_layers=scan, rngs=nnx.Rngs(0),
    )  # fmt: skip


def resnet_scanned(unrolled: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A ResNet's arrays from ``stages/<i>/<j>/...`` to ``stages/<i>/first/...`` (block 0) and
    ``stages/<i>/blocks/...`` (blocks 1.., stacked)."""
    out: dict[str, list] = {}
    for name, a in unrolled.items():
        m = re.match(r"^stages/(\d+)/(\d+)/(.*)$", name)
        if m is None:
            out[name] = [a]
        elif m.group(2) == "0":
            out[f"stages/{m.group(1)}/first/{m.group(3)}"] = [a]
        else:
            out.setdefault(f"stages/{m.group(1)}/blocks/{m.group(3)}", []).append(a)
    return {
        n: parts[0] if len(parts) == 1 and "/blocks/" not in n else np.stack(parts)
        for n, parts in out.items()
    }


@pytest.mark.parametrize("remat", ["none", pytest.param("full", marks=pytest.mark.slow)])
def test_a_resnet_with_scanned_stages_trains_to_the_same_losses_and_batch_statistics(remat: str) -> None:
    reference = resnet(False, "none")
    expected = sgd_losses(
        reference, nnx.to_pure_dict(nnx.state(reference, nnx.Param)), lambda m: class_loss(m, IMAGES)
    )
    model = resnet(True, remat)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    converted = resnet_scanned(arrays(nnx.state(reference, nnx.Param)))
    assert converted.keys() == arrays(nnx.state(model, nnx.Param)).keys()
    params = jax.tree_util.tree_map_with_path(lambda p, _: jnp.asarray(converted[param_path(p)]), params)
    assert arrays(nnx.state(model, nnx.Param))["stages/1/blocks/convs/0/kernel"].shape == (2, 3, 3, 8, 8)
    got = sgd_losses(model, params, lambda m: class_loss(m, IMAGES))
    np.testing.assert_allclose(got, expected, rtol=2e-5)
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    reference(IMAGES), model(IMAGES)  # train mode: the running statistics move, in every layer
    stats = arrays(nnx.state(reference, nnx.BatchStat))
    scanned = arrays(nnx.state(model, nnx.BatchStat))
    for name, value in resnet_scanned(stats).items():
        np.testing.assert_allclose(scanned[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.abs(scanned["stages/1/blocks/norms/0/mean"]).min() > 0


def test_resnet_checkpoints_convert_between_layouts_and_name_the_setting() -> None:
    """A ResNet saved with its stages unrolled loads scanned through ``to_layout`` (and back), and
    read in the other layout without conversion it is refused naming ``model.scan_layers``."""
    unrolled = {**arrays(nnx.state(resnet(False, "none"), nnx.Param))}
    scanned_paths = arrays(nnx.state(resnet(True, "none"), nnx.Param)).keys()
    expected = resnet_scanned(unrolled)
    converted = to_layout(unrolled, scanned_paths)
    for name in scanned_paths:
        np.testing.assert_array_equal(converted[name], expected[name], err_msg=name)
    back = to_layout({n: expected[n] for n in scanned_paths}, unrolled.keys())
    for name, value in unrolled.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    assert layout_hint(unrolled.keys(), scanned_paths) == "model.scan_layers=false"
    assert layout_hint(scanned_paths, unrolled.keys()) == "model.scan_layers=true"
