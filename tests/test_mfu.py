"""Throughput and MFU in every run: FLOPs counted from the step's program, held to a peak."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from research import experiment
from research.config import compose_train
from research.engine import flops
from tests.conftest import ROOT, TINY


def test_matmuls_count_two_flops_per_multiply_add_and_a_scan_its_length() -> None:
    w, x = jnp.ones((32, 16)), jnp.ones((8, 32))
    one = flops.jaxpr_flops(jax.jit(lambda w, x: x @ w).trace(w, x).jaxpr)
    assert one == {"float32": 2 * 8 * 32 * 16}
    xs = jnp.ones((5, 8, 32))
    scanned = jax.jit(lambda w, xs: jax.lax.scan(lambda c, x: (c, x @ w), 0, xs)[1]).trace(w, xs)
    assert flops.jaxpr_flops(scanned.jaxpr) == {"float32": 5 * 2 * 8 * 32 * 16}
    # the gradient of a loss of x @ w for w alone: forward and one more matmul (x is data)
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w)))).trace(w, x)
    assert flops.jaxpr_flops(grad.jaxpr) == {"float32": 2 * 2 * 8 * 32 * 16}
    half = flops.jaxpr_flops(
        jax.jit(lambda w, x: x @ w).trace(w.astype(jnp.bfloat16), x.astype(jnp.bfloat16)).jaxpr
    )
    assert half == {"bfloat16": 2 * 8 * 32 * 16}


def test_a_convolution_counts_its_window_and_input_features_per_output() -> None:
    image, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 16))
    conv = jax.jit(
        lambda k, x: jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    )
    assert flops.jaxpr_flops(conv.trace(kernel, image).jaxpr) == {
        "float32": 2 * (2 * 8 * 8 * 16) * (3 * 3 * 3)
    }


def test_only_the_costlier_branch_of_a_cond_counts() -> None:
    w = jnp.ones((16, 16))

    def f(p, w):
        return jax.lax.cond(p, lambda w: w @ w @ w, lambda w: w @ w, w)

    assert flops.jaxpr_flops(jax.jit(f).trace(True, w).jaxpr) == {"float32": 2 * 2 * 16**3}


def test_each_dtype_is_held_to_its_own_peak_from_the_data_sheet() -> None:
    h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3", platform="gpu")
    peak = flops.Peak(None, h100, num_devices=8)
    assert peak.source == "data sheet"
    assert peak("bfloat16") == pytest.approx(8 * 989.4e12)
    step = flops.StepFlops({"bfloat16": 989.4e12, "float32": 494.7e12})  # one second each on one chip
    assert step.seconds_at_peak(flops.Peak(None, h100, 1)) == pytest.approx(2.0)
    # "TPU v5 lite" (v5e) is not read as "TPU v5" (v5p)
    assert flops.data_sheet_peak("TPU v5 lite", "bfloat16") == 197e12
    assert flops.data_sheet_peak("TPU v5", "bfloat16") == 459e12
    assert flops.data_sheet_peak("cpu", "float32") is None
    cpu = types.SimpleNamespace(device_kind="cpu", platform="cpu")
    assert flops.Peak(2.5, cpu, num_devices=8)("float32") == 2.5e12  # a CPU's devices share the cores
    assert flops.Peak(None, cpu, num_devices=8).source == "measured matmul"


def test_the_measured_peak_is_measured_once_per_process() -> None:
    first = flops.measured_peak("float32")
    assert first > 1e9  # any CPU multiplies faster than a GFLOP/s
    assert flops.measured_peak("float32") == first


def _lm_mfu() -> types.ModuleType:
    """bench/lm_mfu.py, whose model-FLOP count (6N + 12LdT per token) the run's count must match."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module("lm_mfu")
    finally:
        sys.path.remove(str(ROOT / "bench"))


@pytest.mark.slow
def test_a_char_lm_run_reports_mfu_and_its_flops_match_the_gpt_formula(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("to be or not to be that is the question " * 80)
    size = {"depth": 2, "dim": 64, "num_heads": 2, "mlp_dim": 256, "context": 32}
    batch, peak_tflops = 4, 0.05
    overrides = [
        "task=language_model", "model=transformer_lm", "data=text_files",
        f"data.path={tmp_path / 'corpus.txt'}", f"data.batch_size={batch}", "data.stride=8",
        *_lm_mfu().size_overrides(size), "trainer.max_steps=16", "trainer.steps_per_call=8",
        "trainer.log_every=8", "trainer.checkpoint.enabled=false", "trainer.plots=false",
        f"trainer.peak_tflops={peak_tflops}", "optimizer/schedule=constant", *TINY,
    ]  # fmt: skip
    cfg = compose_train(overrides)
    summary = experiment.run(cfg, tmp_path / "run")
    for key in ("train/examples_per_s", "train/tokens_per_s", "train/tflops_per_s", "train/mfu"):
        assert summary[key] > 0, key
    rate = summary["train/steps_per_s"]
    assert summary["train/examples_per_s"] == pytest.approx(rate * batch)
    assert summary["train/tokens_per_s"] == pytest.approx(rate * batch * size["context"], rel=1e-3)
    assert summary["train/tflops_per_s"] == pytest.approx(rate * summary["train/flops_per_step"] / 1e12)
    assert summary["train/mfu"] == pytest.approx(summary["train/tflops_per_s"] / peak_tflops)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("train/mfu" in r for r in records if "train/loss" in r)

    task = experiment.build(cfg).task
    state = task.init(jax.random.PRNGKey(0), {"tokens": jnp.zeros((batch, size["context"] + 1), jnp.int32)})
    per_token, _, _ = _lm_mfu().model_flops_per_token(state, size)
    hand = per_token * batch * size["context"]
    assert summary["train/flops_per_step"] == pytest.approx(hand, rel=0.10)
