"""research.export: the serialised model, reloaded with only jax and numpy, gives the framework's logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, TINY, run_train

# A fresh process that imports only jax and numpy, as the exported README shows.
LOADER = """
import sys, jax, numpy as np
exported = jax.export.deserialize(bytearray(open(sys.argv[1] + "/model.stablehlo", "rb").read()))
params = dict(np.load(sys.argv[1] + "/params.npz"))
images = np.load(sys.argv[2])
for n in (1, 100):
    np.save(f"{sys.argv[2]}.{n}.npy", np.asarray(exported.call(params, images[:n])))
assert not any(m.split(".")[0] in ("research", "hydra", "flax", "omegaconf") for m in sys.modules)
"""


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    run_train(
        "+experiment=digits_cnn",
        "trainer.max_steps=30",
        "trainer.eval_every=30",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    return run_dir


def export(*args: str) -> subprocess.CompletedProcess:
    """``python -m research.export <args>`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "research.export", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def framework_logits(run_dir: Path, images: np.ndarray) -> np.ndarray:
    from research.experiment import open_saved

    opened = open_saved(run_dir)
    return np.asarray(opened.built.task.logits(opened.state, images))


@pytest.mark.slow
def test_the_exported_model_reloads_in_a_fresh_process_and_matches_for_batches_of_1_and_100(
    cnn_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exported"
    proc = export(f"run={cnn_run}", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["input_shape"] == [8, 8, 1] and len(meta["class_names"]) == 10
    assert "exported.call(params, images)" in (out / "README.md").read_text()

    images = np.random.default_rng(0).integers(0, 17, size=(100, 8, 8, 1)).astype(meta["input_dtype"])
    np.save(tmp_path / "images.npy", images)
    load = subprocess.run(
        [sys.executable, "-c", LOADER, str(out), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert load.returncode == 0, load.stderr[-2000:]
    expected = framework_logits(cnn_run, images)
    for n in (1, 100):
        got = np.load(tmp_path / f"images.npy.{n}.npy")
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, expected[:n], rtol=1e-5, atol=1e-5)


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    proc = export(f"run={tmp_path}", "replica=x")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: replica='x' must be a seed index (0 for a run of one seed)"
    ]


def test_meta_and_readme_state_the_raw_units_the_model_expects(tmp_path: Path) -> None:
    """Digits pixels run 0..16: an exported model fed 0..255 scored 0.65 and nothing said why."""
    run_dir, out = tmp_path / "run", tmp_path / "exported"
    run_train("+experiment=digits_mlp", "+debug=fast", *TINY, f"hydra.run.dir={run_dir}")
    proc = export(f"run={run_dir}", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["input_range"] == [0, 16]  # data.pixel_max
    readme = (out / "README.md").read_text()
    assert f"(batch, 8, 8, 1) {meta['input_dtype']} raw pixels in [0, 16], as the training data" in readme
    assert "scale yours to that range" in readme


def test_without_a_declared_scale_the_range_is_the_test_images() -> None:
    from research.export import input_range

    images = np.array([[3, 200], [17, 9]], np.uint8)
    assert input_range(None, images) == [3, 200]
    assert input_range(255, images) == [0, 255]
