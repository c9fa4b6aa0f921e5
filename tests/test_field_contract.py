"""A user's own data under other field names: one line naming both sets, before anything is created.

Each task declares the batch fields it reads (``fields``, research/engine/api.py); the build
step compares them with the data's. Without it a loader yielding ``x``/``y`` to the
classification task was a 49-line KeyError from inside jit, after the run directory was made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from research.data.arrays import make_dataset
from research.errors import ConfigError
from research.tasks.base import require_fields
from tests.conftest import TINY, run_train

OWN_DATA = "data._target_=tests.field_data.load"  # tests/field_data.py: images and labels as x, y


def assert_one_line(proc, run_dir: Path, *expected: str) -> None:
    """Exit 2, one ``error:`` line holding each of ``expected``, no traceback, no run directory."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert all(e in lines[0] for e in expected), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run_dir.exists()


def test_classification_of_fields_x_y_is_one_line_naming_both_sets(run_dir: Path) -> None:
    proc = run_train(
        "+experiment=digits_mlp", OWN_DATA, "+debug=fast", *TINY, f"hydra.run.dir={run_dir}", check=False
    )
    assert_one_line(
        proc, run_dir, "task=classification reads field(s) ['image', 'label']", "data=own gives ['x', 'y']"
    )


def test_a_task_that_reads_examples_while_it_is_built_says_the_same(run_dir: Path) -> None:
    """The autoencoder reads its grid images in its constructor: the same line, not a KeyError there."""
    proc = run_train(
        "+experiment=digits_autoencoder",
        OWN_DATA,
        "data.batch_size=8",
        "+debug=fast",
        *TINY,
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert_one_line(proc, run_dir, "task=autoencoder reads field(s) ['image']", "gives ['x', 'y']")


def test_a_missing_field_is_named_and_a_streamed_train_split_is_judged_by_val() -> None:
    image = np.zeros((4, 2, 2, 1), np.float32)
    splits = {s: {"image": image, "lbl": np.zeros(4, np.int32)} for s in ("train", "val", "test")}
    dataset = make_dataset("own", splits, 2, 2, input_shape=(2, 2, 1))
    dataset.splits["train"].in_memory = False  # a streamed split: its arrays are not read to check them
    dataset.splits["train"].data = {"never": image}
    with pytest.raises(
        ConfigError, match=r"reads field\(s\) \['label'\] but data=own gives \['image', 'lbl'\]"
    ):
        require_fields(("image", "label"), "classification", dataset)
    require_fields(("image", "lbl"), "classification", dataset)
    require_fields((), "dqn", dataset)  # a task that declares none is not checked


# The README's "Your own data" loader, word for word: a user's own module and config group.
USER_LOADER = """
import os

import numpy as np

from research.data.array_files import image_transform
from research.data.arrays import make_dataset
from research.data.splits import carve


def load(path, batch_size, eval_batch_size, augment):
    with np.load(os.path.expanduser(path)) as f:
        images, labels = f["scans"], f["diagnosis"]  # (N, H, W, C) uint8, (N,) int
    rows = carve(len(labels), test_fraction=0.2, val_fraction=0.1, seed=0, labels=labels)
    splits = {s: {"image": images[r], "label": labels[r]} for s, r in rows.items()}
    dataset = make_dataset("scans", splits, batch_size, eval_batch_size,
                           input_shape=images.shape[1:], num_classes=int(labels.max()) + 1)
    normalize = {"mean": None, "std": None}  # measured on the train split
    dataset.transform, _ = image_transform(splits["train"]["image"], 255, normalize, augment)
    return dataset
"""
USER_GROUP = """_target_: my_data.load
path: {path}
batch_size: 16
eval_batch_size: 256
augment: {{crop_padding: 0, flip: true, max_rotation_deg: 0.0, max_shift: 0.0}}
"""


def user_files(root: Path, loader: str = USER_LOADER) -> dict[str, str]:
    """my_data.py, conf/data/my_data.yaml and scans.npz under ``root``: the env that finds the module."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    scans = (rng.integers(0, 120, (60, 8, 8, 1)) + 100 * labels[:, None, None, None]).astype(np.uint8)
    np.savez(root / "scans.npz", scans=scans, diagnosis=labels)
    (root / "my_data.py").write_text(loader)
    (root / "conf" / "data").mkdir(parents=True)
    (root / "conf" / "data" / "my_data.yaml").write_text(USER_GROUP.format(path=root / "scans.npz"))
    return {"PYTHONPATH": str(root)}


def test_a_users_loader_in_a_config_dir_trains_with_the_recipes_augmentation(
    tmp_path: Path, run_dir: Path
) -> None:
    env = user_files(tmp_path)
    run_train(
        "--config-dir", str(tmp_path / "conf"), "+experiment=digits_mlp", "data=my_data",
        "data.augment.max_shift=1.0", "+debug=fast", *TINY, f"hydra.run.dir={run_dir}", env=env,
    )  # fmt: skip
    saved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "flip: true" in saved and "max_shift: 1.0" in saved
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 8


def test_a_users_loader_yielding_x_y_from_a_config_dir_is_one_line(tmp_path: Path, run_dir: Path) -> None:
    loader = USER_LOADER.replace('"image": images[r], "label"', '"x": images[r], "y"').replace(
        '["image"]', '["x"]'
    )
    env = user_files(tmp_path, loader)
    proc = run_train(
        "data=my_data",
        "--config-dir",
        str(tmp_path / "conf"),
        *TINY,
        f"hydra.run.dir={run_dir}",
        env=env,
        check=False,
    )
    assert_one_line(
        proc, run_dir, "task=classification reads field(s) ['image', 'label']", "data=scans gives ['x', 'y']"
    )


def test_a_recipes_augment_handed_to_a_loader_without_it_is_one_line(tmp_path: Path, run_dir: Path) -> None:
    """digits_cnn sets data.augment; a loader that takes no augment says so, not a Hydra traceback."""
    env = user_files(
        tmp_path, USER_LOADER.replace(", augment):", "):").replace("normalize, augment)", "normalize, {})")
    )
    (tmp_path / "conf" / "data" / "my_data.yaml").write_text(
        USER_GROUP.format(path=tmp_path / "scans.npz").rsplit("augment", 1)[0]
    )
    proc = run_train(
        "--config-dir", str(tmp_path / "conf"), "+experiment=digits_cnn", "data=my_data", *TINY,
        f"hydra.run.dir={run_dir}", env=env, check=False,
    )  # fmt: skip
    assert_one_line(proc, run_dir, "data.augment is not a parameter of my_data.load")
