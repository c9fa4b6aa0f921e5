"""A user's own table, CSV or Parquet, as ``data=table``: one row an example.

``target`` names the column to predict and decides the task kind: a categorical column
(text, booleans, a pandas category) is classification with its values as class names; a
numeric one is regression in the target's own units (``target_kind`` says otherwise, e.g.
for integer-coded classes). ``features`` are the columns read (null: all but the target).
Numeric features are standardised with the mean and std of the training rows only, and so
is a regression target when ``scale_target`` (``info`` keeps the scalers, so errors are
reported in the target's units); the columns named in ``categorical`` are one-hot encoded
with the categories of the training rows (one seen only elsewhere is all zeros). Missing
values follow ``missing``, a declared policy: ``error`` (the default: one line naming the
column), ``drop`` (rows with any missing value used), or ``fill`` (a numeric feature gets
its training mean, a categorical one its own category; rows without a target are dropped).

Fields are named for the task that reads them: ``image``/``label`` for classification,
``x``/``y`` for regression (``fields`` renames them). Everything a user can get wrong is one
line naming the file and the column, raised while the run is built, before anything is written.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from research.data import own_files
from research.data.arrays import SPLITS, make_dataset
from research.data.base import Dataset
from research.data.tabular import standardize
from research.errors import ConfigError, DataError

SUFFIXES = (".csv", ".parquet", ".pq")
MISSING = ("error", "drop", "fill")
KINDS = ("auto", "classification", "regression")
MISSING_CATEGORY = "<missing>"  # the category a missing categorical value becomes under missing=fill
DEFAULT_FIELDS = {
    "classification": {"image": "features", "label": "target"},  # what task=classification reads
    "regression": {"x": "features", "y": "target"},  # what task=regression reads
}


def read(file: Path) -> Any:
    """The file as a pandas DataFrame; an unreadable one is one line naming it."""
    import pandas as pd  # ~0.5 s: paid only by tables

    try:
        if file.suffix.lower() == ".csv":
            return pd.read_csv(file)
        return pd.read_parquet(file)
    except Exception as err:  # noqa: BLE001 - any parse failure is the same unreadable file to the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{file} cannot be read as a table ({first})") from None


def check_column(name: str, key: str, columns: list[str], file: Path) -> None:
    """One line naming a column ``file`` lacks, the nearest spelling, and the columns there are."""
    if name in columns:
        return
    near = difflib.get_close_matches(str(name), columns, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise DataError(f"{key}={name!r} is not a column of {file}: {hint}its columns are {', '.join(columns)}")


def kind_of(column: Any, kind: str) -> str:
    """classification for a categorical target, regression for a numeric one, unless ``kind`` says."""
    import pandas as pd

    if kind not in KINDS:
        raise ConfigError(f"data.target_kind={kind!r} must be one of {', '.join(KINDS)}")
    if kind != "auto":
        return kind
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    return "regression" if numeric else "classification"


def columns_used(frames: dict[str, Any], files: dict[str, Path], target: str, features: Any) -> list[str]:
    """The feature columns, checked in every file; ``features`` null: all but the target."""
    for part, frame in frames.items():
        columns = [str(c) for c in frame.columns]
        check_column(target, "data.target", columns, files[part])
        for name in features or ():
            check_column(name, "data.features", columns, files[part])
    first = next(iter(frames.values()))
    names = [str(c) for c in first.columns if str(c) != target] if features is None else list(features)
    if not names:
        raise DataError(f"{next(iter(files.values()))} has no feature columns besides data.target={target!r}")
    return names


def apply_missing(
    frames: dict[str, Any], files: dict[str, Path], columns: list[str], target: str, policy: str
) -> dict[str, Any]:
    """The frames under the ``missing`` policy (fill's values wait for the training rows)."""
    if policy not in MISSING:
        raise ConfigError(f"data.missing={policy!r} must be one of {', '.join(MISSING)}")
    out = {}
    for part, frame in frames.items():
        absent = frame[columns].isna()
        if policy == "error" and absent.to_numpy().any():
            column = absent.sum().idxmax()
            count, row = int(absent[column].sum()), int(np.flatnonzero(absent[column].to_numpy())[0])
            raise DataError(
                f"column {column!r} of {files[part]} has {count} missing value(s) (first at row {row}): "
                "set data.missing=drop or data.missing=fill"
            )
        drop = absent.any(axis=1) if policy == "drop" else absent[target]
        out[part] = frame.loc[~drop.to_numpy()].reset_index(drop=True)
    return out


def check_features(frame: Any, file: Path, names: list[str], categorical: list[str]) -> None:
    """Every feature is numeric or listed in ``categorical``: one line naming the first that is not."""
    import pandas as pd

    for name in categorical:
        if name not in names:
            raise ConfigError(f"data.categorical names {name!r}, which is not among the features {names}")
    for name in names:
        column = frame[name]
        if name not in categorical and not pd.api.types.is_numeric_dtype(column):
            example = column.dropna().iloc[0] if column.notna().any() else None
            raise DataError(
                f"feature column {name!r} of {file} is not numeric (values like {example!r}): list it in "
                "data.categorical to one-hot encode it, or leave it out of data.features"
            )


def encode_features(
    parts: dict[str, Any], numeric: list[str], categorical: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """{split: (N, F) float32}: numeric columns standardised by the train rows (a missing value
    filled with the train mean), then each categorical column one-hot over its train categories."""
    train = parts["train"]
    fill = train[numeric].mean().to_numpy(np.float64)  # NaN skipped: the mean of the values there are
    filled = {s: np.where(np.isnan(v := f[numeric].to_numpy(np.float64)), fill, v) for s, f in parts.items()}
    x_mean, x_std = standardize(filled["train"])
    categories = {c: sorted(train[c].fillna(MISSING_CATEGORY).astype(str).unique()) for c in categorical}
    out = {}
    for split, frame in parts.items():
        blocks = [(filled[split] - x_mean) / x_std]
        for column, names in categories.items():
            codes = frame[column].fillna(MISSING_CATEGORY).astype(str).to_numpy()
            blocks.append((codes[:, None] == np.array(names)[None, :]).astype(np.float64))
        out[split] = np.concatenate(blocks, axis=1).astype(np.float32)
    feature_names = numeric + [f"{c}={v}" for c, names in categories.items() for v in names]
    scaler = {"x_mean": list(map(float, x_mean)), "x_std": list(map(float, x_std))}
    scaler["normalization"] = (
        f"{len(numeric)} numeric features standardised by the train rows' mean and std (info x_mean, "
        f"x_std); {len(categories)} categorical one-hot"
    )
    return out, {
        "feature_names": feature_names,
        "numeric_features": numeric,
        "categories": categories,
        **scaler,
    }


def encode_target(
    parts: dict[str, Any], target: str, kind: str, scale: bool, file: Path
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """{split: labels (N,) int32 or values (N, 1) float32} and what ``info`` keeps of them."""
    import pandas as pd

    if kind == "classification":
        values = {split: frame[target].astype(str).to_numpy() for split, frame in parts.items()}
        names = sorted(set(np.concatenate(list(values.values()))))
        if len(names) < 2:
            raise DataError(
                f"data.target={target!r} of {file} holds one class ({names[0]!r}): "
                "classification needs two or more"
            )
        index = {name: i for i, name in enumerate(names)}
        labels = {s: np.array([index[v] for v in values[s]], np.int32) for s in values}
        counts = {s: np.bincount(labels[s], minlength=len(names)).tolist() for s in labels}
        return labels, {"class_names": names, "class_counts": counts}
    if not pd.api.types.is_numeric_dtype(parts["train"][target]):
        raise DataError(
            f"data.target={target!r} of {file} is not numeric, so it cannot be a regression target: "
            "leave data.target_kind=auto to classify it"
        )
    y = {split: frame[[target]].to_numpy(np.float64) for split, frame in parts.items()}
    y_mean, y_std = standardize(y["train"]) if scale else (np.zeros(1), np.ones(1))
    scaled = {split: ((v - y_mean) / y_std).astype(np.float32) for split, v in y.items()}
    # Predicting the training mean: the error any model should beat, in the target's units.
    mean_rmse = float(np.sqrt(np.mean((y["test"] - y["train"].mean()) ** 2)))
    info = {
        "y_mean": float(y_mean[0]),
        "y_std": float(y_std[0]),
        "baseline_test_rmse": {"train_mean": mean_rmse},
        "target_normalization": f"target (y - {y_mean[0]:.6g}) / {y_std[0]:.6g}",
    }
    return scaled, info


def load(
    path: str | None,
    target: str | None,
    features: list[str] | None,
    categorical: list[str],
    missing: str,
    target_kind: str,
    scale_target: bool,
    fields: dict[str, str] | None,
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """The table at ``path`` (one file, or a folder of train/val/test files) as a Dataset."""
    files = own_files.locate(path, SUFFIXES, "a CSV or Parquet table")
    if not target:
        raise ConfigError("data.target is required: the column to predict (data.target=<column>)")
    frames = {part: read(file) for part, file in files.items()}
    for part, frame in frames.items():
        if not len(frame):
            split = "every" if part == own_files.WHOLE else f"the {part}"
            raise DataError(f"{files[part]} holds no rows, so {split} split is empty: give it rows")
    names = columns_used(frames, files, str(target), features)
    categorical = [str(c) for c in categorical or ()]
    frames = apply_missing(frames, files, [*names, str(target)], str(target), missing)
    for part, frame in frames.items():
        check_features(frame, files[part], names, categorical)
    first = next(iter(frames))
    kind = kind_of(frames[first][target], target_kind)
    labels = None
    if kind == "classification":
        labels = np.unique(frames[first][target].astype(str).to_numpy(), return_inverse=True)[1]
    rows = own_files.plan(
        {p: len(f) for p, f in frames.items()}, test_fraction, val_fraction, split_seed, labels
    )
    parts = {split: frames[part].iloc[index].reset_index(drop=True) for split, (part, index) in rows.items()}
    for split, (part, _) in rows.items():
        if not len(parts[split]):
            raise DataError(
                f"the {split} split of {files[part]} is empty: give it rows, or change data.{split}_fraction"
            )
    numeric = [n for n in names if n not in categorical]
    x, x_info = encode_features(parts, numeric, categorical)
    y, y_info = encode_target(parts, str(target), kind, scale_target, files[first])
    if "target_normalization" in y_info:
        x_info["normalization"] += "; " + y_info.pop("target_normalization")
    return _dataset(files, x, y, kind, fields, batch_size, eval_batch_size, {
        **x_info, **y_info, "target": target, "target_kind": kind, "missing": missing,
        "split_seed": split_seed, "splits": own_files.describe(files, rows, split_seed),
    })  # fmt: skip


def _dataset(
    files: dict[str, Path],
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    kind: str,
    fields: dict[str, str] | None,
    batch_size: int,
    eval_batch_size: int,
    info: dict[str, Any],
) -> Dataset:
    """The encoded splits under the field names the task reads (or ``fields``)."""
    fields = dict(fields or DEFAULT_FIELDS[kind])
    if sorted(fields.values()) != ["features", "target"]:
        raise ConfigError(
            f"data.fields={fields} must map one field name to features and one to target, "
            "e.g. {x: features, y: target}"
        )
    source = {"features": x, "target": y}
    splits = {split: {name: source[what][split] for name, what in fields.items()} for split in SPLITS}
    return make_dataset(
        f"table:{own_files.stem(files)}",
        splits,
        batch_size,
        eval_batch_size,
        input_shape=(x["train"].shape[1],),
        num_classes=len(info["class_names"]) if kind == "classification" else None,
        class_names=info.get("class_names"),
        info=info,
        empty_hint="give that split rows, or change data.test_fraction or data.val_fraction",
    )
