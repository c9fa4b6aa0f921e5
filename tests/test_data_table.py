"""A user's own table (CSV, Parquet) as data=table, and the carving of splits it shares with
other own-data sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.data.arrays import random_split
from research.data.splits import carve
from research.data.table import load
from research.data.tabular import load_diabetes
from research.errors import ConfigError
from tests.conftest import TINY, run_train
from tests.test_field_contract import assert_one_line


def test_carving_is_stratified_seeded_disjoint_and_unstratified_as_random_split() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    parts = carve(100, test_fraction=0.2, val_fraction=0.1, seed=1, labels=labels)
    assert [np.bincount(labels[parts["test"]]).tolist(), len(parts["val"])] == [[10, 6, 4], 8]
    assert np.abs(np.bincount(labels[parts["val"]]) - np.array([4.0, 2.4, 1.6])).max() < 1
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(100))
    again = carve(100, test_fraction=0.2, val_fraction=0.1, seed=1, labels=labels)
    assert all(np.array_equal(parts[s], again[s]) for s in parts)
    moved = carve(100, test_fraction=0.2, val_fraction=0.1, seed=2, labels=labels)
    assert not np.array_equal(parts["test"], moved["test"])
    plain = carve(442, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert all(np.array_equal(plain[s], v) for s, v in random_split(442, 0.2, 0.1, 0).items())
    own_test = carve(100, test_fraction=0.0, val_fraction=0.1, seed=0, labels=labels)
    assert [len(own_test[s]) for s in ("train", "val", "test")] == [90, 10, 0]


@pytest.mark.parametrize(
    ("test_fraction", "val_fraction", "message"),
    [
        (1.0, 0.1, r"data.test_fraction must be in \[0, 1\), got 1.0"),
        (0.001, 0.1, "data.test_fraction=0.001 of 100 examples leaves the test split empty"),
        (0.5, 0.99, "leave no training examples of 100"),
    ],
)
def test_carving_fractions_that_leave_a_split_empty_are_one_line(
    test_fraction: float, val_fraction: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        carve(100, test_fraction=test_fraction, val_fraction=val_fraction, seed=0)


# --- data=table -------------------------------------------------------------------------------

TABLE = {  # everything data=table takes but the path
    "target": "kind", "features": None, "categorical": [], "missing": "error", "target_kind": "auto",
    "scale_target": True, "fields": None, "test_fraction": 0.2, "val_fraction": 0.1, "split_seed": 0,
    "batch_size": 8, "eval_batch_size": 64,
}  # fmt: skip


def frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """Three separable classes of text labels, two numeric features and a categorical one."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, rows)
    return pd.DataFrame(
        {
            "width": kind * 10.0 + rng.normal(size=rows),
            "height": rng.normal(100.0, 5.0, rows),
            "colour": np.array(["red", "green", "blue"])[rng.integers(0, 3, rows)],
            "kind": np.array(["ant", "bee", "cat"])[kind],
        }
    )


def test_a_text_target_classifies_with_its_values_as_classes_from_csv_and_parquet(tmp_path: Path) -> None:
    frame().to_csv(tmp_path / "t.csv", index=False)
    frame().to_parquet(tmp_path / "t.parquet")
    csv = load(str(tmp_path / "t.csv"), **{**TABLE, "categorical": ["colour"]})
    parquet = load(str(tmp_path / "t.parquet"), **{**TABLE, "categorical": ["colour"]})
    assert (csv.name, csv.num_classes, csv.class_names, csv.input_shape) == (
        "table:t",
        3,
        ["ant", "bee", "cat"],
        (5,),
    )
    assert csv.info["feature_names"] == ["width", "height", "colour=blue", "colour=green", "colour=red"]
    assert [csv.splits[s].num_examples for s in ("train", "val", "test")] == [43, 5, 12]
    for split in ("train", "val", "test"):
        ours, theirs = csv.splits[split].arrays(), parquet.splits[split].arrays()
        assert sorted(ours) == ["image", "label"] and ours["label"].dtype == np.int32
        assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    train = csv.splits["train"].arrays()["image"]
    assert np.allclose(train[:, :2].mean(0), 0, atol=1e-6) and np.allclose(train[:, :2].std(0), 1, atol=1e-5)
    assert set(np.unique(train[:, 2:])) == {0.0, 1.0} and np.all(train[:, 2:].sum(1) == 1)
    # stratified: each class in the test split within one row of its share
    counts = np.bincount(frame()["kind"].map({"ant": 0, "bee": 1, "cat": 2}), minlength=3)
    assert np.abs(np.array(csv.info["class_counts"]["test"]) - counts * 12 / 60).max() < 1


def test_a_numeric_target_regresses_and_diabetes_as_a_table_is_the_built_in_diabetes(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes as sklearn_diabetes

    sklearn_diabetes(scaled=False, as_frame=True).frame.to_parquet(tmp_path / "diabetes.parquet")
    table = load(str(tmp_path / "diabetes.parquet"), **{**TABLE, "target": "target"})
    built_in = load_diabetes(0.2, 0.1, 0, True, 8, 64)
    assert table.num_classes is None and table.input_shape == (10,)
    for split in ("train", "val", "test"):
        ours, theirs = table.splits[split].arrays(), built_in.splits[split].arrays()
        assert sorted(ours) == ["x", "y"]
        assert all(np.allclose(ours[k], theirs[k], atol=1e-6) for k in ours)
    for key in ("y_mean", "y_std", "baseline_test_rmse"):
        assert table.info[key] == pytest.approx(built_in.info[key])


def test_own_splits_in_a_folder_and_missing_values_filled_from_the_train_rows(tmp_path: Path) -> None:
    train, test = frame(50, seed=1), frame(20, seed=2)
    train.loc[3, "width"], test.loc[0, "colour"] = np.nan, None
    train.loc[5:9, "colour"] = None  # a missing category is a category of its own
    test.loc[1, "colour"] = "purple"  # a category the training rows never show: all zeros
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    dataset = load(str(tmp_path), **{**TABLE, "categorical": ["colour"], "missing": "fill"})
    assert [dataset.splits[s].num_examples for s in ("train", "val", "test")] == [45, 5, 20]
    assert dataset.info["splits"] == {
        "train": "train.csv less the carved rows",
        "val": "carved from train.csv (split_seed=0)",
        "test": "test.csv",
    }
    image = dataset.splits["test"].arrays()["image"]
    assert dataset.info["feature_names"][2:] == [
        "colour=<missing>",
        "colour=blue",
        "colour=green",
        "colour=red",
    ]
    assert image[0, 2:].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert image[1, 2:].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert np.isfinite(dataset.splits["train"].arrays()["image"]).all()


def test_a_table_trains_through_the_cli(tmp_path: Path, run_dir: Path) -> None:
    frame(80).to_csv(tmp_path / "t.csv", index=False)
    proc = run_train(
        "data=table", f"data.path={tmp_path / 't.csv'}", "data.target=kind", "data.categorical=[colour]",
        "+debug=fast", *TINY, f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 8 and 0.0 <= summary["test/accuracy"] <= 1.0, proc.stdout[-2000:]


def bad_tables(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    """{case: (overrides, what the one line must hold)}, with the files each case reads written."""
    frame().to_csv(root / "t.csv", index=False)
    one_class = frame().assign(kind="ant")
    one_class.to_csv(root / "one.csv", index=False)
    holes = frame()
    holes.loc[[4, 9], "height"] = np.nan
    holes.to_csv(root / "holes.csv", index=False)
    (root / "split").mkdir()
    frame().to_csv(root / "split" / "train.csv", index=False)
    frame().iloc[:0].to_csv(root / "split" / "test.csv", index=False)
    (root / "broken.parquet").write_bytes(b"not parquet")

    def at(name: str) -> str:
        return f"data.path={root / name}"

    kind, colour = "data.target=kind", "data.categorical=[colour]"
    columns = "columns are width, height, colour, kind"
    return {
        "misspelt target": (
            [at("t.csv"), "data.target=knd", colour],
            ["data.target='knd'", "t.csv", "did you mean 'kind'", columns],
        ),
        "missing feature": (
            [at("t.csv"), kind, "data.features=[width,depth]"],
            ["data.features='depth'", "t.csv", columns],
        ),
        "text feature without an encoding": (
            [at("t.csv"), kind],
            ["feature column 'colour'", "t.csv", "not numeric", "data.categorical"],
        ),
        "one class": ([at("one.csv"), kind, colour], ["one.csv", "one class ('ant')"]),
        "missing values": (
            [at("holes.csv"), kind, colour],
            ["column 'height'", "holes.csv", "2 missing", "data.missing=drop"],
        ),
        "empty split": ([at("split"), kind, colour], ["test.csv holds no rows", "the test split is empty"]),
        "no such path": ([at("nowhere.csv"), kind], ["data.path=", "nowhere.csv", "does not exist"]),
        "unreadable file": ([at("broken.parquet"), kind], ["broken.parquet", "cannot be read as a table"]),
    }


@pytest.mark.parametrize(
    "case",
    ["misspelt target", "missing feature", "text feature without an encoding", "one class",
     "missing values", "empty split", "no such path", "unreadable file"],
)  # fmt: skip
def test_bad_tables_are_one_line_naming_the_file_and_column_before_anything_is_written(
    case: str, tmp_path: Path, run_dir: Path
) -> None:
    overrides, expected = bad_tables(tmp_path)[case]
    proc = run_train("data=table", *overrides, *TINY, f"hydra.run.dir={run_dir}", check=False)
    assert_one_line(proc, run_dir, *expected)
