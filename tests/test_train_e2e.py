"""The spine end to end through the CLI: the default experiment, files, records, and every recipe."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from research.cli import available_experiments
from tests import needs
from tests.conftest import ROOT, TINY, run_train


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_default_experiment_reaches_097_and_writes_its_record(run_dir: Path) -> None:
    """`python -m research.train` with no overrides: digits, test accuracy >= 0.97."""
    proc = run_train("logger=none", f"hydra.run.dir={run_dir}", timeout=240)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/accuracy"] >= 0.97, summary
    for key in (
        "test/loss",
        "test/precision",
        "test/recall",
        "test/f1",
        "train/steps_per_s",
        "compile_s",
        "wall_s",
        "steps",
        "val/accuracy",
    ):
        assert key in summary, key
    assert summary["compile_s"] > 0 and summary["steps"] > 0
    assert '"test/accuracy"' in proc.stdout
    records = _read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] == summary["steps"]
    assert any("val/accuracy" in r for r in records) and any("train/loss" in r for r in records)
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / "train.log").exists()
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 1000
    assert (run_dir / "plots" / "confusion_matrix.png").stat().st_size > 1000
    assert any(p.name.isdigit() for p in (run_dir / "checkpoints").iterdir())
    matrix = summary["test/confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) > 300


def _local_corpus(tmp_path: Path) -> list[str]:
    """A small text in place of a corpus that would be downloaded (shakespeare_char)."""
    path = tmp_path / "corpus.txt"
    path.write_text("First Citizen: before we proceed any further, hear me speak.\n" * 40)
    return ["data=text_files", f"data.path={path}", "data.batch_size=4"]


def _few_number_words(tmp_path: Path) -> list[str]:
    """The generated number words at a few hundred pairs (num2words takes ~0.3 ms a pair)."""
    return ["data.train_size=256", "data.val_size=32", "data.test_size=32", "data.batch_size=16"]


# Recipes whose data is neither bundled nor TFDS: the overrides that give them a small local stand-in.
LOCAL_DATA = {"shakespeare_char_transformer": _local_corpus, "number_words_transformer": _few_number_words,
              "number_words_lstm": _few_number_words}  # fmt: skip

# Model families whose recipe sizes take a minute to compile on 2 cores: the same recipe, one
# small block (the smoke test checks the recipe runs end to end, not what it reaches).
ATTENTION = ["model.depth=1", "model.dim=16", "model.num_heads=2", "model.mlp_dim=32"]
TINY_MODEL = {"vit": ATTENTION, "transformer_classifier": ATTENTION, "transformer_lm": ATTENTION,
              "unet": ["model.channels=[4,8]"],
              "speech_ctc": ["model.channels=[4]", "model.hidden_size=8", "model.num_layers=1"],
              "seq2seq_transformer": ["model.encoder_depth=1", "model.decoder_depth=1", "model.dim=16",
                                      "model.num_heads=2", "model.mlp_dim=32"],
              "seq2seq_lstm": ["model.embed_dim=8", "model.encoder_hidden=8", "model.hidden_size=16",
                               "model.attention_dim=8"]}  # fmt: skip


# 50 labels per class
FEW_LABELS = ("fashion_mnist_cnn_finetune", "fashion_mnist_cnn_linear_probe", "fashion_mnist_cnn_lora")
# The TFDS mock draws pixels in 0..255 whatever the dataset; binarized_mnist's are 0/1 (pixel_max 1),
# and a Bernoulli likelihood of targets above 1 is unbounded below: scale the mock's back into [0, 1].
MOCK_PIXELS = {
    "mnist_vae": ["data.pixel_max=255"],
    "oxford_pet_unet_segmentation": ["data.image_size=32"],
    "ted_hrlr_transformer": ["data.source_len=24", "data.target_len=24"],
}  # the mock's short strings
# TFDS's mock draws a photo and its mask at unrelated sizes: these recipes get records that agree
# (20-48 pixel photos, so the pet recipe reads them at 32x32, not 128x128).
MOCK_SCRIPTS = {
    "oxford_pet_unet_segmentation": "mock_pets.py",
    "speech_commands_ctc": "mock_speech_commands.py",
}
# Data synthesised here (espeak-ng speaks the digits): a few utterances, cached for the session's data dir.
SYNTHESISED = {"spoken_digits_ctc": ["data.num_utterances=32", "data.num_eval_utterances=8"]}


# Recipes that distil a teacher run (task.teacher.run): the teacher's recipe and tiny sizes, trained once.
TEACHERS = {
    "fashion_mnist_cnn_distill": ("fashion_mnist_cnn", "model.channels=[4,8]", "model.dense_sizes=[8]")
}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make(recipe, *overrides)``: a run of ``recipe`` at 8 steps on the TFDS mock, once per session."""
    made: dict[tuple, Path] = {}

    def make(name: str, *overrides: str) -> Path:
        if (name, *overrides) not in made:
            run_dir = tmp_path_factory.mktemp("tiny_runs") / name
            mock = ROOT / "tests" / "mock_train.py"
            run_train(f"+experiment={name}", "+debug=fast", "data.batch_size=16", *overrides, *TINY,
                      f"hydra.run.dir={run_dir}", timeout=240, cwd=run_dir.parent, script=mock)  # fmt: skip
            made[(name, *overrides)] = run_dir
        return made[(name, *overrides)]

    return make


def tiny_model(recipe: str) -> list[str]:
    family = re.search(r"override /model: (\w+)", recipe)
    return TINY_MODEL.get(family.group(1), []) if family else []


@pytest.mark.parametrize("name", available_experiments())
def test_every_experiment_runs_tiny(name: str, tmp_path: Path, tiny_runs: Callable[..., Path]) -> None:
    """Smoke test of every shipped recipe through the CLI at a tiny size (lightning-hydra-template style)."""
    recipe = (ROOT / "experiments" / f"{name}.yaml").read_text()
    if "override /env:" in recipe and not needs.HAVE_GYMNAX:  # an RL recipe on a gymnax environment
        pytest.skip(needs.GYMNAX_MISSING)
    if name in SYNTHESISED and shutil.which("espeak-ng") is None:
        pytest.skip(needs.ESPEAK_MISSING)
    assert recipe.startswith("# @package _global_\n#"), "a recipe starts with its header comment"
    assert "python -m research.train +experiment=" + name in recipe
    run_dir = tmp_path / name
    mocked = "data: digits" not in recipe and "data: none" not in recipe
    # The TFDS mock has 96 examples per split: batches must be smaller than its train part.
    run_train(
        f"+experiment={name}",
        "+debug=fast",
        *(LOCAL_DATA[name](tmp_path) if name in LOCAL_DATA else ["data.batch_size=16"] if mocked else []),
        *tiny_model(recipe),
        # Few-label recipes on the mock's ~10 examples per class: fewer labels, smaller batches.
        *(["data.labels_per_class=3", "data.batch_size=8"] if name in FEW_LABELS else []),
        *MOCK_PIXELS.get(name, []),
        *SYNTHESISED.get(name, []),
        *([f"task.teacher.run={tiny_runs(*TEACHERS[name])}"] if name in TEACHERS else []),
        f"hydra.run.dir={run_dir}",
        timeout=240,
        cwd=tmp_path,
        script=ROOT / "tests" / MOCK_SCRIPTS.get(name, "mock_train.py") if mocked else None,
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 8
    # Every task's optimizer keeps the health signals (research/watch.py): a GAN's per model.
    assert any(k.startswith("train/") and k.endswith("/grad_norm") for k in summary), sorted(summary)
    # Every run reports its model FLOPs utilisation (engine/flops.py): 0 for a step without matmuls.
    assert (summary["train/mfu"] > 0) == (summary["train/flops_per_step"] > 0), summary
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["name"] == name


def test_overrides_reach_the_run(run_dir: Path) -> None:
    run_train(
        "+experiment=digits_cnn",
        "model=cnn",
        "optimizer=sgd",
        "optimizer.learning_rate=0.05",
        "trainer.max_steps=24",
        "trainer.eval_every=12",
        *TINY,
        f"hydra.run.dir={run_dir}",
    )
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["optimizer"]["_target_"] == "optax.sgd"
    assert config["optimizer"]["learning_rate"] == 0.05
    assert config["model"]["_target_"].endswith("CNN")
    records = _read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if "val/accuracy" in r] == [12, 24]


def test_mnist_mlp_is_the_keras_recipe(tmp_path: Path) -> None:
    """Flatten, Dense 128 relu, Dense 10, Adam 1e-3, 5 epochs of batch 32: on TFDS's mock MNIST."""
    run_dir = tmp_path / "mnist"
    run_train(
        "+experiment=mnist_mlp", *TINY, f"hydra.run.dir={run_dir}", script=ROOT / "tests" / "mock_train.py"
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_params"] == 784 * 128 + 128 + 128 * 10 + 10
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["optimizer"]["_target_"] == "optax.adam" and config["optimizer"]["learning_rate"] == 1e-3
    assert config["optimizer"]["schedule"]["_target_"] == "optax.constant_schedule"
    assert config["data"]["batch_size"] == 32 and config["model"]["activation"] == "relu"
    train_examples = 96 - round(96 * config["data"]["val_fraction"])  # the mock has 96 examples per split
    assert summary["steps"] == 5 * (train_examples // 32)
    # Each of the mock's 96 test images is counted once (the last batch's padding is not), and the
    # accuracy is the confusion matrix's diagonal share.
    matrix = summary["test/confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == 96
    assert summary["test/accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(10)) / 96)
