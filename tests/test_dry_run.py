"""trainer.dry_run=true: memory per device, FLOPs and compile time before the run, and nothing created."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from research.engine.settings import TrainerConfig
from research.errors import ConfigError
from tests.conftest import DIGITS_FAST, run_train

# digits_mlp: 64-512-256-10, weights and biases in float32
DIGITS_MLP_WEIGHTS = 64 * 512 + 512 * 256 + 256 * 10
DIGITS_MLP_PARAMS = DIGITS_MLP_WEIGHTS + 512 + 256 + 10


def nbytes(text: str) -> float:
    """``12.34 MB`` in bytes."""
    number, unit = text.split()
    return float(number) * {"GB": 1e9, "MB": 1e6, "kB": 1e3, "B": 1}[unit]


def figure(text: str, label: str) -> float:
    """A ``<label>  <number> <unit>`` line of the plan, in bytes."""
    m = re.search(rf"^  {re.escape(label)}\s+([\d.]+) (GB|MB|kB|B)\b", text, re.M)
    assert m, f"no {label!r} line in:\n{text}"
    return float(m.group(1)) * {"GB": 1e9, "MB": 1e6, "kB": 1e3, "B": 1}[m.group(2)]


def test_a_dry_run_prints_memory_flops_and_compile_time_and_creates_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_train(
        *DIGITS_FAST, "trainer.dry_run=true", "trainer.device_memory_gb=16", f"hydra.run.dir={run_dir}"
    )
    out = proc.stdout
    assert figure(out, "parameters") == pytest.approx(4 * DIGITS_MLP_PARAMS, rel=0.01)
    assert figure(out, "optimizer, other state") >= 2 * 4 * DIGITS_MLP_PARAMS  # Adam's two moments
    peak = figure(out, "estimated peak")
    parts = [
        "parameters",
        "optimizer, other state",
        "data on device",
        "best state copy",
        "activations, temporaries",
    ]
    running = sum(figure(out, p) for p in parts)  # before init, no state: the init line alone
    assert peak == pytest.approx(max(running, figure(out, "init (state and data only)")), rel=0.01)
    flops = float(re.search(r"train step: ([\d.e+]+) GFLOP", out).group(1)) * 1e9
    # digits_mlp's batch of 32: forward, weight gradients, and input gradients but the first layer's
    assert flops == pytest.approx(2 * 32 * (3 * DIGITS_MLP_WEIGHTS - 64 * 512), rel=1e-3)
    assert re.search(r"compile: \d+ programs, traced in [\d.]+ s, compiled in [\d.]+ s", out)
    assert re.search(r"^peak: [\d.e+-]+ TFLOP/s over 1 device\(s\) \(measured matmul\)", out, re.M)
    assert re.search(r"^fits: .* of 16.00 GB \(trainer.device_memory_gb=16\)", out, re.M)
    assert not run_dir.exists()


def test_a_model_larger_than_the_stated_memory_is_one_line_saying_by_how_much(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_train(
        *DIGITS_FAST, "trainer.dry_run=true", "trainer.device_memory_gb=0.001", f"hydra.run.dir={run_dir}",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    size = r"([\d.]+ (?:GB|MB|kB|B))"
    m = re.match(
        rf"error: will not fit: needs {size} per device, {size} more than trainer.device_memory_gb", line
    )
    assert m, line
    assert nbytes(m.group(1)) - nbytes(m.group(2)) == pytest.approx(1e6, rel=0.02)  # 0.001 GB
    assert not run_dir.exists()


@pytest.mark.slow
def test_fsdp_over_devices_that_are_not_here_splits_the_state_per_device(tmp_path: Path) -> None:
    common = (
        *DIGITS_FAST,
        "trainer.dry_run=true",
        "trainer.dry_run_devices=4",
        f"hydra.run.dir={tmp_path}/r",
    )
    replicated = run_train(*common, "mesh=data_parallel", "data.batch_size=32").stdout
    sharded = run_train(*common, "mesh=fsdp", "data.batch_size=32").stdout
    assert "on 4 x cpu (mesh data=1 fsdp=4 tensor=1)" in sharded
    assert figure(replicated, "parameters") == pytest.approx(4 * DIGITS_MLP_PARAMS, rel=0.01)
    # every kernel has a dimension 4 divides; the biases of 10 outputs stay whole
    assert figure(sharded, "parameters") < 0.3 * figure(replicated, "parameters")
    assert figure(sharded, "optimizer, other state") < 0.3 * figure(replicated, "optimizer, other state")


def test_the_dry_run_settings_are_checked_by_the_schema() -> None:
    with pytest.raises(ConfigError, match="trainer.device_memory_gb must be a positive number or null"):
        TrainerConfig.from_dict({"device_memory_gb": 0})
    with pytest.raises(ConfigError, match="trainer.dry_run_devices must be a positive integer or null"):
        TrainerConfig.from_dict({"dry_run_devices": -2})


def test_a_dry_run_config_handed_to_the_python_path_trains_nothing(tmp_path: Path) -> None:
    from research import experiment
    from research.config import compose_train

    cfg = compose_train([*DIGITS_FAST, "trainer.dry_run=true"])
    with pytest.raises(ConfigError, match=r"trainer.dry_run=true plans a run without training it"):
        experiment.run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_dry_run_of_a_sweep_is_one_line(tmp_path: Path) -> None:
    proc = run_train(
        "-m", *DIGITS_FAST, "trainer.dry_run=true", "optimizer.learning_rate=1e-3,1e-2",
        f"hydra.sweep.dir={tmp_path}/sweep", check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "error: trainer.dry_run=true plans one run: drop -m and give one value per key"
    )
    assert not (tmp_path / "sweep").exists()


def test_lax_convolutions_on_the_cpu_are_named_as_not_counted() -> None:
    """XLA:CPU's convolution kernels work in memory ``memory_analysis`` does not report: the plan
    counts the ``convolution`` ops of a CPU program and the report says their memory is left out."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from research.engine import cpu_kernels, plan

    def convs(x: jax.Array, k: jax.Array) -> jax.Array:
        dims = ("NHWC", "HWIO", "NHWC")
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dims)
        return jax.lax.conv_general_dilated(y, k, (1, 1), "SAME", dimension_numbers=dims)

    compiled = jax.jit(convs).lower(jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 3))).compile()
    assert cpu_kernels.convolutions(compiled) == 2
    assert cpu_kernels.convolutions(jax.jit(lambda a: a @ a).lower(jnp.ones((4, 4))).compile()) == 0
    fields = {f.name: 0 for f in dataclasses.fields(plan.Plan)}
    base = plan.Plan(**{**fields, "device_kind": "cpu", "mesh": {"data": 1}, "transient_program": "train"})
    assert "not counted" not in plan.report(base, "x", None, "")
    lines = plan.report(dataclasses.replace(base, cpu_convolutions=2), "x", None, "").splitlines()
    (note,) = [line for line in lines if "not counted" in line]
    assert "XLA:CPU's 2 convolution kernels" in note
    assert lines.index(note) == [i for i, line in enumerate(lines) if "estimated peak" in line][0] + 1


def test_ynnpack_fusions_working_memory_is_counted_from_the_hlo() -> None:
    """XLA:CPU runs a dot-gelu-dot chain as one YNNPACK fusion whose intermediates XLA's
    ``memory_analysis`` does not see; the plan counts the matmul results it materialises (and a
    reduction's operand), without the fusion's own result."""
    import jax
    import jax.numpy as jnp

    from research.engine import cpu_kernels

    rows, width, hidden = 512, 16, 64
    x, w1, w2 = jnp.ones((rows, width)), jnp.ones((width, hidden)), jnp.ones((hidden, width))

    def mlp(x: jax.Array, w1: jax.Array, w2: jax.Array) -> jax.Array:
        return jnp.sum(jax.nn.gelu(x @ w1) @ w2)

    compiled = jax.jit(mlp).lower(x, w1, w2).compile()
    assert cpu_kernels.YNN_FUSION in compiled.as_text()  # jax 0.11 and 0.12 both fuse it so
    assert compiled.memory_analysis().temp_size_in_bytes == 0  # what XLA alone reports
    assert cpu_kernels.library_working_bytes(compiled) == 4 * rows * (hidden + width)
    elementwise = jax.jit(lambda a: a * 2.0 + 1.0).lower(x).compile()
    assert cpu_kernels.library_working_bytes(elementwise) == 0
