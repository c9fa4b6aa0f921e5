"""research.generate: a cGAN's samples as a TFDS dataset, trained on, tested on the real test split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
import yaml

from research.data.generated import load as load_generated
from research.errors import ConfigError, DataError
from research.generate import parse, to_pixels
from tests.conftest import ROOT, TINY, run_train

DIGITS_TEST = 359  # the real digits test split (20% of each class of 1797)
CGAN_TINY = ("+experiment=digits_cgan", "+debug=fast", "task.models.generator.hidden_sizes=[8]",
             "task.models.discriminator.hidden_sizes=[8]", *TINY)  # fmt: skip
GENERATED_DATA = dict(out=None, batch_size=8, eval_batch_size=64, val_fraction=0.1, split_seed=0,
                      in_memory=True, pixel_max=None, normalize={"mean": None, "std": None},
                      augment={})  # fmt: skip


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research.generate", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("generate") / "cgan"
    run_train(*CGAN_TINY, f"hydra.run.dir={run_dir}")
    return run_dir


def test_parse_types_the_options_and_names_what_is_wrong() -> None:
    options = parse(["run=r", "num_examples=30", "seed=2"])
    assert (options["num_examples"], options["seed"], options["checkpoint"]) == (30, 2, "best")
    bad = {"num_examples= is required": ["run=r"], "integers": ["run=r", "num_examples=x"],
           ">= 1": ["run=r", "num_examples=0"], "temp=1": ["run=r", "num_examples=3", "temp=1"]}  # fmt: skip
    for message, argv in bad.items():
        with pytest.raises(ConfigError, match=message):
            parse(argv)


def test_pixels_take_the_source_scale_and_dtype() -> None:
    pixels = to_pixels(np.array([0.0, 0.49, 0.51, 1.0]), 16.0, np.dtype(np.uint8))
    assert pixels.dtype == np.uint8 and pixels.tolist() == [0, 8, 8, 16]


def test_train_generate_then_train_on_it_tests_on_the_real_split(cgan_run: Path, tmp_path: Path) -> None:
    """train -> generate -> train a classifier on the samples: val from them, test from the real data."""
    proc = generate(f"run={cgan_run}", "num_examples=200", "batch_size=64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = cgan_run / "generated" / "generated" / "1.0.0"
    assert "data=generated" in proc.stdout and (folder / "dataset_info.json").is_file()
    meta = json.loads((cgan_run / "generated" / "generated.json").read_text())
    assert meta["num_examples"] == 200 and meta["checkpoint_step"] == 8 and meta["source"] == "digits"
    samples = tfds.builder_from_directory(folder).as_data_source(split="train")
    images = np.stack([r["image"] for r in samples])
    labels = np.array([r["label"] for r in samples])
    assert images.shape == (200, 8, 8, 1) and images.dtype == np.uint8 and images.max() <= 16
    assert np.bincount(labels).tolist() == [20] * 10  # balanced classes
    assert images.std() > 0  # not one constant image

    run_dir = tmp_path / "tstr"
    run_train("+experiment=digits_mlp", "data=generated", f"data.run={cgan_run}", "+debug=fast", *TINY,
              f"hydra.run.dir={run_dir}")  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sum(map(sum, summary["test/confusion_matrix"])) == DIGITS_TEST  # the real test split
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    dataset = load_generated(run=config["data"]["run"], **GENERATED_DATA)
    assert dataset.splits["val"].num_examples == 20 and dataset.splits["train"].num_examples == 180
    assert dataset.splits["test"].num_examples == DIGITS_TEST and dataset.class_names[:2] == ["0", "1"]

    again = generate(f"run={cgan_run}", "num_examples=10")
    assert again.returncode == 2 and "out=" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_refusals_are_one_line(cgan_run: Path, tmp_path: Path) -> None:
    missing = generate(f"run={tmp_path / 'nowhere'}", "num_examples=10")
    assert missing.returncode == 2 and str(tmp_path / "nowhere") in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    plain = tmp_path / "dcgan"  # the same run, unconditional: refused before any checkpoint is read
    (plain / ".hydra").mkdir(parents=True)
    config = yaml.safe_load((cgan_run / ".hydra" / "config.yaml").read_text())
    config["task"]["conditional"] = False
    (plain / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    proc = generate(f"run={plain}", "num_examples=10")
    assert proc.returncode == 2 and "class-conditional" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (plain / "generated").exists()


def test_the_loader_says_how_to_write_missing_samples(cgan_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.run=<run dir> is required"):
        load_generated(run=None, **GENERATED_DATA)
    with pytest.raises(DataError, match="python -m research.generate run="):
        load_generated(run=str(cgan_run), **{**GENERATED_DATA, "out": str(tmp_path / "none")})
