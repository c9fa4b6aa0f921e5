"""Meshes and partition rules: data-parallel, FSDP and tensor-parallel steps match one device.

The comparisons run in a child process with 8 simulated CPU devices (the pytest
process has already initialised JAX with one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from research.engine.sharding import (
    AXES,
    batch_sharding,
    compile_rules,
    leaf_spec,
    make_mesh,
    state_shardings,
)
from research.errors import ConfigError
from tests.conftest import ROOT

MESHES = {  # preset, sizes on 8 devices
    "data_parallel": {},
    "fsdp": {"data": 4, "fsdp": 2},
    "tensor_parallel": {"data": 2, "tensor": 4},
}
STEPS = 8  # train steps compared per mesh


def preset(name: str, **sizes: int) -> dict:
    cfg = yaml.safe_load((ROOT / "conf" / "mesh" / f"{name}.yaml").read_text())
    return {**cfg, **sizes}


# A small ResNet on the digits: the third model family whose partition rules are checked.
MODELS = {
    "digits_mlp": ["+experiment=digits_mlp"],
    "digits_cnn": ["+experiment=digits_cnn"],
    "digits_resnet": [
        "+experiment=digits_cnn",
        "model=resnet",
        "~model.channels",  # the recipe's CNN settings
        "~model.dense_sizes",
        "~model.batch_norm",
        "model.stage_sizes=[1,1]",
        "model.widths=[8,16]",
        "model.stem_width=8",
    ],
}


def train_on_meshes(model: str) -> dict:
    """Child process: ``STEPS`` steps of ``MODELS[model]`` on one device and on each preset."""
    from research.config import compose_train
    from research.engine.feed import MemoryFeed
    from research.engine.replicas import Replicas
    from research.engine.steps import Programs
    from research.experiment import build

    cfg = compose_train([*MODELS[model], "logger=none", "optimizer/schedule=constant"])
    built = build(cfg)
    task, dataset = built.task, built.dataset
    rng = jax.random.PRNGKey(0)
    initial = {}

    def run(mesh_cfg: dict, devices: list, init_on_mesh: bool) -> dict:
        """Init compiles slowly on CPU: only FSDP creates its state sharded (the engine's way), and
        its initial parameters are checked against one device's; the other meshes start from a copy."""
        mesh = make_mesh(mesh_cfg, devices)
        feed = MemoryFeed(dataset.splits["train"], dataset.batch_size, 0, 1, mesh)
        abstract = jax.eval_shape(task.init, rng, feed.example())
        shardings = state_shardings(mesh, abstract, mesh_cfg.get("rules"))
        programs = Programs(task, feed.gather, Replicas(), per_seed_data=True, state_sharding=shardings)
        if init_on_mesh:
            state = programs.init(rng, feed.example())
            if initial:
                jax.tree.map(
                    np.testing.assert_array_equal, jax.device_get(state["params"]), initial["params"]
                )
            else:  # a copy: the train step donates (deletes) the state it is given
                initial.update(jax.tree.map(lambda a: a.copy(), jax.device_get(state)))
        else:
            state = jax.device_put(jax.tree.map(lambda a: a.copy(), initial), shardings)
        state, metrics = programs.train(state, feed.data, feed.xs(0, STEPS))
        leaves = jax.tree_util.tree_leaves_with_path(state["params"])
        return {
            "loss": np.asarray(metrics["loss"]).tolist(),
            "params": {jax.tree_util.keystr(p): np.asarray(v).ravel().tolist() for p, v in leaves},
            "split": sorted(jax.tree_util.keystr(p) for p, v in leaves if any(v.sharding.spec)),
            "batch_split": str(feed.xs(STEPS, 1).sharding.spec),
        }

    out = {"single": run({}, jax.devices()[:1], init_on_mesh=True)}
    for name, sizes in MESHES.items():
        out[name] = run(preset(name, **sizes), jax.devices(), init_on_mesh=name == "fsdp")
    return out


@pytest.fixture(scope="module")
def results() -> dict:
    """Every model on every mesh, in one child process with 8 CPU devices."""
    code = (
        "import json, jax; jax.config.update('jax_num_cpu_devices', 8)\n"
        "from tests.test_sharding import train_on_meshes\n"
        "from tests.test_sharding import MODELS\n"
        "print(json.dumps({m: train_on_meshes(m) for m in MODELS}))"
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
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("mesh", list(MESHES))
def test_mesh_step_matches_one_device(results: dict, model: str, mesh: str) -> None:
    single, sharded = results[model]["single"], results[model][mesh]
    np.testing.assert_allclose(sharded["loss"], single["loss"], rtol=2e-5, atol=1e-6)
    assert sharded["params"].keys() == single["params"].keys()
    for path, values in single["params"].items():
        np.testing.assert_allclose(sharded["params"][path], values, rtol=1e-4, atol=2e-6, err_msg=path)
    assert single["loss"][-1] < single["loss"][0], "the steps compared must actually train"
    assert "data" in sharded["batch_split"] and "fsdp" in sharded["batch_split"]
    if mesh == "data_parallel":
        assert sharded["split"] == []
    else:  # FSDP and TP must really split parameters, or the comparison proves nothing
        assert len(sharded["split"]) >= 3, sharded["split"]


def mesh_of(data: int = 1, fsdp: int = 1, tensor: int = 1) -> AbstractMesh:
    """A mesh of the given sizes without the devices (the pytest process has one)."""
    return AbstractMesh((data, fsdp, tensor), AXES)


def test_fsdp_rule_splits_the_largest_dimension_it_divides() -> None:
    mesh, rules = mesh_of(fsdp=2), compile_rules(preset("fsdp")["rules"])
    assert leaf_spec("params/dense/0/kernel", (128, 64), rules, mesh) == P("fsdp", None)
    assert leaf_spec("opt_state/0/0/mu/head/kernel", (64, 10), rules, mesh) == P("fsdp", None)
    assert leaf_spec("params/head/bias", (9,), rules, mesh) == P()  # nothing divides: replicated
    assert leaf_spec("rng", (2,), rules, mesh) == P()  # not a parameter
    assert leaf_spec("opt_state/0/0/count", (), rules, mesh) == P()


def test_tensor_parallel_rules_pair_columns_with_rows_and_split_heads() -> None:
    mesh, rules = mesh_of(tensor=4), compile_rules(preset("tensor_parallel")["rules"])
    assert leaf_spec("params/hidden/0/kernel", (64, 512), rules, mesh) == P(None, "tensor")
    assert leaf_spec("params/hidden/1/kernel", (512, 256), rules, mesh) == P("tensor", None)
    assert leaf_spec("opt_state/0/0/nu/hidden/0/bias", (512,), rules, mesh) == P("tensor")
    assert leaf_spec("params/head/kernel", (256, 10), rules, mesh) == P("tensor", None)
    assert leaf_spec("params/blocks/0/conv/kernel", (3, 3, 1, 16), rules, mesh) == P(
        None, None, None, "tensor"
    )
    assert leaf_spec("model_state/blocks/1/norm/mean", (32,), rules, mesh) == P("tensor")
    resnet_conv = "params/stages/1/0/convs/0/kernel"
    assert leaf_spec(resnet_conv, (3, 3, 16, 32), rules, mesh) == P(None, None, None, "tensor")
    assert leaf_spec("params/stages/1/0/shortcut/norm/scale", (32,), rules, mesh) == P("tensor")
    assert leaf_spec("params/block/attention/query/kernel", (64, 8, 8), rules, mesh) == P(
        None, "tensor", None
    )
    assert leaf_spec("params/block/attention/out/kernel", (8, 8, 64), rules, mesh) == P("tensor", None, None)
    with pytest.raises(ConfigError, match="cannot split a dimension of 10"):
        leaf_spec("params/hidden/0/kernel", (64, 10), rules, mesh)


def test_replica_axis_stays_unsplit() -> None:
    state = {"params": {"w": jax.ShapeDtypeStruct((8, 4, 6), np.float32)}}
    shardings = state_shardings(mesh_of(tensor=2), state, [["w$", [None, "tensor"]]], leading_axes=1)
    assert shardings["params"]["w"].spec == P(None, None, "tensor")


@pytest.mark.parametrize(
    "rules", [[["(", "fsdp"]], [["w", "model"]], [["w", ["data", "pipeline"]]], [["only-one"]]]
)
def test_bad_rules_fail_with_one_line(rules: list) -> None:
    with pytest.raises(ConfigError) as err:
        compile_rules(rules)
    assert "mesh.rules" in str(err.value) and "\n" not in str(err.value)


def test_a_batch_that_does_not_split_over_the_mesh_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="multiples of 8"):
        batch_sharding(mesh_of(data=4, fsdp=2), (16, 30), axis=1)
    assert batch_sharding(mesh_of(data=4, fsdp=2), (16, 32), axis=1).spec == P(None, ("data", "fsdp"))
