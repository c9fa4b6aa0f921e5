"""logger=tensorboard: TensorBoard's own reader returns every record of metrics.jsonl (means in
tensorboard/, each seed's values in tensorboard/seed_<i>/), the images, the config and the
hyperparameters; a resumed run's event files hold each step once; bad settings are one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from research.engine.tensorboard import TensorboardWriter, cut_events
from tests.conftest import ROOT, run_train

ARGS = (
    "+experiment=digits_mlp",
    "optimizer/schedule=constant",
    "logger=tensorboard",
    "logger.tensorboard.flush_secs=0.1",
    "trainer.num_seeds=2",
    "trainer.steps_per_call=8",
    "trainer.log_every=8",
    "trainer.eval_every=16",
    "trainer.checkpoint.every=32",
    "trainer.progress=false",
)


def _read(directory: Path, purge: bool = True) -> EventAccumulator:
    """The events as TensorBoard loads them; ``purge=False``: as the files hold them, without the
    purge a resumed writer announces (a reader that ignores it must not see a step twice either).
    """
    sizes = {"scalars": 0, "images": 0, "tensors": 0}
    events = EventAccumulator(str(directory), size_guidance=sizes, purge_orphaned_data=purge)
    events.Reload()
    return events


def _scalars(events: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _expected(records: list[dict]) -> tuple[dict, dict]:
    """(tag -> [(step, value)] of the scalars, seed index -> the same of the per-seed lists)."""
    means: dict[str, list] = {}
    seeds: dict[int, dict[str, list]] = {}
    for record in records:
        for key, value in record.items():
            if key == "step":
                continue
            if isinstance(value, list):
                for i, v in enumerate(value):
                    seeds.setdefault(i, {}).setdefault(key.removesuffix("_per_seed"), []).append(
                        (record["step"], v)
                    )
            else:
                means.setdefault(key, []).append((record["step"], value))
    return means, seeds


def _assert_same(read: dict, expected: dict) -> None:
    """Every expected series, at the same steps with the same values (TensorBoard keeps float32)."""
    for tag, points in expected.items():
        assert tag in read, f"{tag} missing from the event files: {sorted(read)}"
        assert [s for s, _ in read[tag]] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in read[tag]], [v for _, v in points], rtol=1e-6, err_msg=tag)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tensorboard") / "run"
    run_train(*ARGS, "trainer.max_steps=48", f"hydra.run.dir={run_dir}")
    return run_dir


def test_the_event_files_hold_every_record_the_images_and_the_config(trained: Path) -> None:
    records = _records(trained)
    means, seeds = _expected(records)
    assert len(records) == 6 and seeds.keys() == {0, 1} and "val/accuracy" in seeds[0]
    main = _read(trained / "tensorboard")
    read = _scalars(main)
    _assert_same(read, means)
    for seed, series in seeds.items():
        _assert_same(_scalars(_read(trained / "tensorboard" / f"seed_{seed}")), series)
    summary = json.loads((trained / "summary.json").read_text())
    assert read["test/accuracy"] == [(48, pytest.approx(summary["test/accuracy"], rel=1e-6))]

    (image,) = main.Images("test/confusion_matrix")
    assert image.step == 48 and image.width > 100 and image.encoded_image_string.startswith(b"\x89PNG")

    (text,) = main.Tensors("config/text_summary")
    config = yaml.safe_load(textwrap.dedent(text.tensor_proto.string_val[0].decode()))
    saved = yaml.safe_load((trained / ".hydra" / "config.yaml").read_text())
    assert config["trainer"] == saved["trainer"] and config["model"] == saved["model"]

    start = main.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = hparams_metadata.parse_session_start_info_plugin_data(start).hparams
    learning_rate = saved["optimizer"]["learning_rate"]
    assert hparams["optimizer.learning_rate"].number_value == pytest.approx(learning_rate)
    assert hparams["trainer.num_seeds"].number_value == 2 and hparams["model.activation"].string_value


@pytest.mark.slow
def test_a_run_resumed_before_its_last_records_holds_each_step_once(trained: Path, tmp_path: Path) -> None:
    """Killed after logging step 48 with its last checkpoint at 32: the rerun logs 40 and 48 again."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "48")
    (run_dir / "summary.json").unlink()
    proc = run_train(*ARGS, "trainer.max_steps=64", f"hydra.run.dir={run_dir}")
    assert "resuming from step 32" in proc.stdout, proc.stdout

    records = _records(run_dir)
    assert [r["step"] for r in records] == [8, 16, 24, 32, 40, 48, 56, 64]
    means, seeds = _expected(records)
    for purge in (True, False):
        main = _read(run_dir / "tensorboard", purge)
        _assert_same(_scalars(main), means)  # the steps once each, with the resumed run's values
        for seed, series in seeds.items():
            _assert_same(_scalars(_read(run_dir / "tensorboard" / f"seed_{seed}", purge)), series)
        assert [e.step for e in main.Images("test/confusion_matrix")] == [64]
        assert [e.step for e in main.Tensors("config/text_summary")] == [0]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_cutting_back_drops_later_steps_the_final_pass_and_a_torn_record(tmp_path: Path) -> None:
    writer = TensorboardWriter(tmp_path, {"flush_secs": 1}, {"name": "x"}, [], None)
    for step in (1, 2, 3):
        writer.write(step, {"train/loss": float(step)})
    health = {"train/grad_norm": 1.0, "train/grad_norm/dense_0": 0.5, "train/grad_norm/dense_1": 2.0}
    writer.write(2, health)
    writer.images(2, {"val/samples": np.ones((4, 6)), "val/rgb": np.full((4, 6, 3), 200, np.uint8)})
    writer.images(3, {"test/grid": np.zeros((4, 4, 3))})
    writer.summary(3, {"steps": 3, "test/accuracy": 0.5, "test/confusion": [[1, 0], [0, 1]]})
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    path.write_bytes(path.read_bytes() + b"\x20\x00\x00")  # a record a killed run began to write

    kept = cut_events(tmp_path, 2)
    assert "config/text_summary" in kept and "test/accuracy" not in kept
    events = _read(tmp_path)
    assert _scalars(events) == {
        "train/loss": [(1, 1.0), (2, 2.0)],
        **{k: [(2, v)] for k, v in health.items()},
    }
    (spread,) = events.Histograms("train/grad_norm/groups")  # the layer groups' grad norms
    assert spread.step == 2 and (spread.histogram_value.min, spread.histogram_value.max) == (0.5, 2.0)
    assert sorted(events.Tags()["images"]) == ["val/rgb", "val/samples"]  # the test pass's image went
    (samples,) = events.Images("val/samples")
    assert (samples.step, samples.width, samples.height) == (2, 6, 4)


def test_bad_settings_are_one_line_before_the_run_directory(tmp_path: Path) -> None:
    for override, says in [
        ("logger.tensorboard.flush_secs=0", "logger.tensorboard.flush_secs=0 must be a positive number"),
        ("+logger.tensorboard.every=3", "logger.tensorboard.every is not a setting"),
        ("logger=[wandb,tensorbord]", "no config 'tensorbord' in group 'logger': choose from none,"),
    ]:
        extra = () if override.startswith("logger=") else ("logger=tensorboard",)
        proc = run_train(*extra, override, f"hydra.run.dir={tmp_path / 'run'}", check=False, timeout=60)
        (line,) = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and line.startswith(f"error: {says}"), proc.stderr
        assert not (tmp_path / "run").exists()


def test_the_logger_group_takes_a_list_of_its_entries() -> None:
    from research.config import compose_train

    assert set(compose_train(["logger=[wandb,tensorboard]"]).logger) == {"wandb", "tensorboard"}
    assert set(compose_train(["logger=tensorboard"]).logger) == {"tensorboard"}
    assert compose_train(["logger=[wandb,tensorboard]", "+debug=fast"]).logger.wandb is None


def test_tensorboardx_is_imported_only_when_the_logger_is_on() -> None:
    code = (
        "import sys, research.experiment, research.engine.loop, research.engine.writers; "
        "assert 'tensorboardX' not in sys.modules and 'tensorboard' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
