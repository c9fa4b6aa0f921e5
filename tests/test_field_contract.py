"""A user's own data under other field names: one line naming both sets, before anything is created.

Each task declares the batch fields it reads (``fields``, research/engine/api.py); the build
step compares them with the data's. Without it a loader yielding ``x``/``y`` to the
classification task was a 49-line KeyError from inside jit, after the run directory was made.
"""

from __future__ import annotations

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
