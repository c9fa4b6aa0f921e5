"""int8 weights (research.quantize, research.export quantize=int8): per-channel scales bound the error,
a digits CNN keeps its test accuracy within 0.5 points, and its weights file is ~4x smaller."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from research import quantization
from tests.conftest import ROOT, TINY, run_train


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits CNN whose kernels outweigh its biases and norms (a 512-wide dense layer), as a
    deployed model's do."""
    run_dir = tmp_path_factory.mktemp("quantize") / "run"
    run_train(
        "+experiment=digits_cnn", "model.dense_sizes=[512]", "trainer.max_steps=120",
        "trainer.eval_every=120", *TINY, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    return run_dir


def test_per_channel_scales_bound_each_weight_error_by_half_a_step() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 8)).astype(np.float32) * np.geomspace(1e-3, 10, 8, dtype=np.float32)
    w[..., 2] = 0  # a pruned channel reads back as exact zeros
    q, scale = quantization.quantize(w)
    assert q.dtype == np.int8 and scale.shape == (1, 1, 1, 8) and np.abs(q).max() == quantization.LEVELS
    error = np.abs(quantization.dequantize(q, scale) - w)
    assert (error <= scale / 2 + 1e-7).all() and (quantization.dequantize(q, scale)[..., 2] == 0).all()
    flat = {"params/conv/kernel": w, "params/conv/bias": np.ones(8, np.float32)}
    stored = quantization.quantize_flat(flat)
    assert sorted(stored) == ["params/conv/bias", "params/conv/kernel", "params/conv/kernel.scale"]
    assert sorted(quantization.dequantize_flat(stored)) == sorted(flat)


def test_int8_weights_keep_test_accuracy_within_half_a_point_and_the_file_is_about_4x_smaller(
    cnn_run: Path,
) -> None:
    from research.quantize import quantize

    out, report = quantize(cnn_run, {"checkpoint": "best"}, [])
    assert report["metric"] == "test/accuracy" and report["float32"]["test/accuracy"] > 0.8
    assert abs(report["change"]) <= 0.005
    assert 3.5 < report["size_ratio"] < 4.0
    stored = dict(np.load(out / "params.npz"))
    assert (
        stored["params/dense/0/kernel"].dtype == np.int8 and stored["params/dense/0/bias"].dtype == np.float32
    )
    assert (
        json.loads((out / "quantize.json").read_text())["int8"]["bytes"]
        == (out / "params.npz").stat().st_size
    )


def test_the_int8_export_is_about_4x_smaller_and_gives_the_same_classes(
    cnn_run: Path, tmp_path: Path
) -> None:
    import jax

    from research.export import export

    options = {"checkpoint": "best", "replica": "0"}
    images = np.random.default_rng(0).integers(0, 17, size=(200, 8, 8, 1)).astype(np.uint8)
    logits = {}
    for weights in ("float32", "int8"):
        out = export(cnn_run, {**options, "out": str(tmp_path / weights), "quantize": weights}, [])
        exported = jax.export.deserialize(bytearray((out / "model.stablehlo").read_bytes()))
        logits[weights] = np.asarray(exported.call(dict(np.load(out / "params.npz")), images))
    sizes = {w: (tmp_path / w / "params.npz").stat().st_size for w in logits}
    assert 3.5 < sizes["float32"] / sizes["int8"] < 4.0
    assert json.loads((tmp_path / "int8" / "meta.json").read_text())["weights"] == "int8"
    assert (logits["int8"].argmax(1) == logits["float32"].argmax(1)).mean() >= 0.98
    assert not np.array_equal(logits["int8"], logits["float32"])


def test_quantizing_a_run_without_checkpoints_is_one_line(cnn_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(cnn_run, bare, ignore=shutil.ignore_patterns("checkpoints", "quantized"))
    proc = subprocess.run(
        [sys.executable, "-m", "research.quantize", f"run={bare}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bare} has no checkpoint to read (it was trained with trainer.checkpoint.enabled=false)"
    ]
    assert not (bare / "quantized").exists()
