"""bench/gpu_all.sh: its dry run passes on the CPU, and fails naming what the device run would lack."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "bench" / "gpu_all.sh"


def dry_run(device_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_ALL_DEVICE_DIR": str(device_dir)}
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


def _gpu_all():
    spec = importlib.util.spec_from_file_location("gpu_all", ROOT / "bench" / "gpu_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_all"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_the_dry_run_passes_on_the_cpu_and_says_when_the_device_folder_is_not_prepared(
    tmp_path: Path,
) -> None:
    proc = dry_run(tmp_path / "not_prepared")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "dry run: 7 steps" in proc.stdout
    assert "is not prepared: run bench/gpu_all.sh --prepare" in proc.stdout


def test_a_prepared_folder_missing_a_wheel_or_the_data_fails_naming_them(tmp_path: Path) -> None:
    device = tmp_path / ".device"
    (device / "wheels").mkdir(parents=True)
    (device / "wheels" / "flax-0.12.12-py3-none-any.whl").write_bytes(b"")
    (device / "tfds" / "digits").mkdir(parents=True)
    proc = dry_run(device)
    assert proc.returncode == 1
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error: ")]
    assert any("lacks hydra-core==1.3.8" in e for e in errors), errors
    assert any("lacks shakespeare_char/" in e for e in errors), errors
    assert not any("flax" in e or "digits" in e for e in errors), errors


def test_every_carried_wheel_is_pinned_and_every_step_names_an_existing_script() -> None:
    gpu_all = _gpu_all()
    carry, image, _ = gpu_all.read_wheels()
    assert {"hydra-core", "omegaconf", "tensorflow-datasets", "flax"} <= set(carry)
    assert all(re.fullmatch(r"\d+(\.\d+)*", v) for v in carry.values()), carry
    assert "jax" in image and not set(carry) & image
    for step in gpu_all.STEPS:
        assert step.argv[0] == "-m" or (ROOT / step.argv[0]).is_file(), step.argv
    assert any("model.remat=full" in overrides for step in gpu_all.STEPS for overrides in step.configs)


@pytest.mark.parametrize("override", ["model.no_such_key=1", "+experiment=no_such_recipe"])
def test_the_dry_run_reports_a_config_that_does_not_compose(
    override: str, tmp_path: Path, monkeypatch
) -> None:
    gpu_all = _gpu_all()
    monkeypatch.setattr(gpu_all, "DEVICE_DIR", tmp_path / "absent")
    step = gpu_all.STEPS[2]
    monkeypatch.setattr(
        gpu_all, "STEPS", [gpu_all.Step(step.name, step.argv, 1, [[*gpu_all.GPT2, override]], step.headline)]
    )
    composing = [p for p in gpu_all.dry_run() if "does not compose" in p]  # (pytest's imports aside)
    assert len(composing) == 1 and override in composing[0], composing
