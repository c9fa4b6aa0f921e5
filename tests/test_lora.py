"""optimizer.lora: adapters on a built model's kernels, only they (and ``train``) optimised, the base
bit-identical after training, and research.export merging them into plain kernels with the same logits."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.errors import ConfigError
from research.models import lora
from research.models.cnn import CNN
from research.models.transformer import TransformerLM
from research.models.vit import ViT
from research.optim import make_optimizer, param_path
from tests.conftest import TINY, run_train

SETTINGS = {"rank": 2, "alpha": 4, "kernels": ["dense", "blocks", "head"]}


def _cnn(settings: dict = SETTINGS) -> nnx.Module:
    build = lora.adapting(CNN, settings)
    return build(input_shape=(8, 8, 1), num_outputs=3, channels=[4], dense_sizes=[8], rngs=nnx.Rngs(0))


def _vit(scan: bool) -> nnx.Module:
    build = lora.adapting(ViT, {"rank": 2, "alpha": 2, "kernels": ["mlp", "attention", "head"]})
    return build(
        input_shape=(8, 8, 1), num_outputs=3, patch_size=4, dim=8, depth=2, num_heads=2, mlp_dim=16,
        pool="mean", dropout=0.0, scan_layers=scan, rngs=nnx.Rngs(0),
    )  # fmt: skip


def _lm() -> nnx.Module:
    build = lora.adapting(TransformerLM, {"rank": 2, "alpha": 2, "kernels": ["up", "down", "qkv"]})
    return build(
        vocab_size=11, max_len=6, dim=8, depth=1, num_heads=2, mlp_dim=16, dropout=0.0, positions="learned",
        tie_embeddings=False, rngs=nnx.Rngs(0),
    )  # fmt: skip


def _perturb(model: nnx.Module) -> None:
    """Non-zero B matrices: a fresh adapter adds nothing, a trained one does."""
    for i, (_, module) in enumerate(nnx.iter_modules(model)):
        if lora.is_adapted(module):
            module.lora_b.value = jax.random.normal(jax.random.key(i), module.lora_b.shape)


def _params(model: nnx.Module) -> dict[str, jax.Array]:
    _, params, _ = nnx.split(model, nnx.Param, ...)
    return {param_path(p): v for p, v in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(params))}


@pytest.mark.parametrize(
    "make, inputs",
    [
        (_cnn, jnp.ones((2, 8, 8, 1))),
        (lambda: _vit(False), jnp.ones((2, 8, 8, 1))),
        (lambda: _vit(True), jnp.ones((2, 8, 8, 1))),
        (_lm, jnp.arange(12).reshape(2, 6) % 11),
    ],
    ids=["cnn", "vit", "vit_scanned", "transformer_lm"],
)
def test_adapters_start_at_zero_change_the_output_and_merge_into_the_same_function(make, inputs) -> None:
    model = make()
    model.eval()
    params = _params(model)
    adapters = [n for n in params if lora.is_adapter(n)]
    assert adapters and all(n.rsplit("/", 1)[0] + "/kernel" in params for n in adapters)
    before = model(inputs)
    base = {k: v for k, v in params.items() if not lora.is_adapter(k)}
    _perturb(model)
    adapted = model(inputs)
    assert float(jnp.abs(adapted - before).max()) > 1e-3  # the adapters are in the forward pass
    lora.merge(model)
    merged = _params(model)
    assert not any(lora.is_adapter(n) for n in merged) and set(merged) == set(base)
    assert not any(lora.is_adapted(m) for _, m in nnx.iter_modules(model))
    np.testing.assert_allclose(model(inputs), adapted, rtol=1e-5, atol=1e-5)


def test_fresh_adapters_leave_the_model_as_built() -> None:
    plain = CNN(input_shape=(8, 8, 1), num_outputs=3, channels=[4], dense_sizes=[8], rngs=nnx.Rngs(0))
    adapted = _cnn()
    plain.eval(), adapted.eval()
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    np.testing.assert_array_equal(plain(x), adapted(x))


def test_the_scanned_adapters_are_stacked_like_their_kernels() -> None:
    params = _params(_vit(True))
    kernel = params["transformer/blocks/mlp/up/kernel"]  # (layers, dim, mlp_dim)
    assert params["transformer/blocks/mlp/up/lora_a"].shape == (2, 8, 2)
    assert params["transformer/blocks/mlp/up/lora_b"].shape == (2, 2, kernel.shape[-1])
    # LinearGeneral's (dim, 3, heads, head_dim) kernel: fan-out 3 * heads * head_dim
    assert params["transformer/blocks/attention/qkv/lora_b"].shape == (2, 2, 3 * 8)


def test_only_adapters_and_train_paths_carry_optimizer_state_and_get_updates() -> None:
    settings = {**SETTINGS, "kernels": ["dense"], "train": ["head"]}
    params = nnx.to_pure_dict(nnx.split(_cnn(settings), nnx.Param, ...)[1])
    cfg = {"_target_": "optax.adam", "learning_rate": 0.1, "lora": settings}
    tx = make_optimizer(cfg, 10)
    state = tx.init(params)
    named = {param_path(p): v for p, v in jax.tree_util.tree_leaves_with_path(params)}
    trained = {n: v for n, v in named.items() if lora.is_adapter(n) or n.startswith("head/")}
    assert set(trained) == {"dense/0/lora_a", "dense/0/lora_b", "head/kernel", "head/bias"}
    state_size = sum(x.size for x in jax.tree.leaves(state) if x.ndim)  # adam's mu and nu, no step counts
    assert state_size == 2 * sum(v.size for v in trained.values())
    full = make_optimizer({k: v for k, v in cfg.items() if k != "lora"}, 10).init(params)
    assert sum(x.size for x in jax.tree.leaves(full) if x.ndim) == 2 * sum(v.size for v in named.values())
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    for name, u in ((param_path(p), u) for p, u in jax.tree_util.tree_leaves_with_path(updates)):
        assert bool(jnp.any(u != 0)) == (name in trained), name


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"rank": 0, "alpha": 1, "kernels": ["dense"]}, "optimizer.lora.rank=0"),
        ({"rank": 2, "alpha": 1, "kernels": []}, "optimizer.lora.kernels is empty"),
        (
            {"rank": 2, "alpha": 1, "kernels": ["nothing"]},
            "matches no kernel; the kernels are: blocks/0/conv",
        ),
        ({"rank": 2, "alpha": 1, "kernels": ["dense"], "scale": 3}, "unknown keys ['scale']"),
        ({"rank": 2, "alpha": 1, "kernels": ["("]}, "invalid regex"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        _cnn(settings)
    assert message in str(e.value) and "\n" not in str(e.value)


def _arrays(run_dir: Path) -> dict[str, np.ndarray]:
    from research.engine.init_from import checkpoint_state_dir, read_arrays

    return read_arrays(checkpoint_state_dir(run_dir))


@pytest.mark.slow
def test_lora_run_keeps_the_base_bit_identical_and_exports_merged_weights(tmp_path: Path) -> None:
    """Pretrain digits classes 0-4, then the LoRA recipe's settings on classes 5-9 from it."""
    common = (
        "+experiment=digits_cnn",
        "model.dropout=0.2",
        "trainer.max_steps=20",
        "trainer.eval_every=20",
        *TINY,
    )
    pre, run = tmp_path / "pre", tmp_path / "lora"
    run_train(*common, "data.classes=[0,1,2,3,4]", f"hydra.run.dir={pre}")
    proc = run_train(
        *common,
        "data.classes=[5,6,7,8,9]",
        "+optimizer.lora={rank: 2, alpha: 4, kernels: [blocks, dense], train: [head]}",
        f"trainer.init_from.path={pre}",
        "trainer.init_from.exclude=[head]",
        f"hydra.run.dir={run}",
    )
    assert "adapters (re-initialised) 6" in proc.stdout  # 2 conv kernels and a dense one, A and B each
    before, after = _arrays(pre), _arrays(run)
    base = [n for n in before if n.startswith(("params/", "model_state/")) and "/head/" not in n]
    streams = [n for n in base if "/rngs/" in n]
    assert any("/norm/mean" in n for n in base)  # batch-norm statistics are part of the frozen base
    for name in set(base) - set(streams):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    # the dropout stream is not the base: it moves on, a fresh mask each step
    assert not np.array_equal(
        after["model_state/dropout/rngs/count"], before["model_state/dropout/rngs/count"]
    )
    assert np.abs(after["params/dense/0/lora_b"]).max() > 0  # the adapters did train
    assert not np.array_equal(after["params/head/kernel"], before["params/head/kernel"])
    opt = {n: a for n, a in after.items() if n.startswith("opt_state/") and a.ndim}
    trained = [
        a for n, a in after.items() if n.startswith("params/") and (lora.is_adapter(n) or "/head/" in n)
    ]
    assert sum(a.size for a in opt.values()) == 2 * sum(
        a.size for a in trained
    )  # adam's mu, nu: nothing else

    from research import export
    from research.experiment import open_saved

    out = export.export(run, {"checkpoint": "latest", "replica": "0", "out": str(tmp_path / "exported")}, [])
    flat = dict(np.load(out / "params.npz"))
    assert not any(lora.is_adapter(n) for n in flat)
    kernel = (
        after["params/dense/0/kernel"] + 2.0 * after["params/dense/0/lora_a"] @ after["params/dense/0/lora_b"]
    )
    np.testing.assert_allclose(flat["params/dense/0/kernel"], kernel, rtol=1e-5, atol=1e-6)
    exported = jax.export.deserialize(bytearray((out / "model.stablehlo").read_bytes()))
    images = np.random.default_rng(0).integers(0, 17, size=(16, 8, 8, 1)).astype(np.uint8)
    opened = open_saved(run, checkpoint="latest")
    adapted = np.asarray(opened.built.task.logits(opened.state, images))
    assert math.isfinite(float(np.abs(adapted).max()))
    np.testing.assert_allclose(np.asarray(exported.call(flat, images)), adapted, rtol=1e-4, atol=1e-4)
