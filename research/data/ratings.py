"""Ratings: (user, item, rating) triples for recommendation, generated or from TFDS MovieLens.

Every example is one observed rating: ``user`` and ``item`` int32 dense indices and ``rating``
float32. ``info`` holds ``num_users`` and ``num_items`` (what sizes the embedding tables) and the
train ratings' mean. Train, val and test are a random split of the observed ratings by
``split_seed`` (never the run seed), recorded in ``info``.

``planted`` generates its matrix (no ratings set ships in any package here): a rank-``rank``
matrix U V^T with unit-variance entries, Gaussian noise of ``noise_std`` added, each entry
observed with probability ``observed_fraction``. A model that recovers the matrix reaches a
test RMSE near ``noise_std``; ``info["baseline_test_rmse"]`` records the noise-free matrix's
(the oracle) and the train mean's.

``movielens`` reads TFDS ``movielens/100k-ratings`` (needs internet once: ``python -m
research.data.prepare movielens/100k-ratings``), mapping its string ``user_id``/``movie_id`` to
dense indices in sorted order.
"""

from __future__ import annotations

import os

import numpy as np

from research.data.arrays import SPLITS, make_dataset, random_split
from research.data.base import Dataset
from research.errors import ConfigError

EMPTY_HINT = "change data.test_fraction or data.val_fraction"


def _positive(key: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
    return value


def ratings_dataset(
    name: str,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    sizes: tuple[int, int],
    split: tuple[float, float, int],
    batch_sizes: tuple[int, int],
    info: dict,
) -> Dataset:
    """Observed triples split at random into train/val/test, with the sizes and pairs in ``info``."""
    test_fraction, val_fraction, split_seed = split
    rows = random_split(len(users), test_fraction, val_fraction, split_seed)
    splits = {
        s: {
            "user": users[rows[s]].astype(np.int32),
            "item": items[rows[s]].astype(np.int32),
            "rating": ratings[rows[s]].astype(np.float32),
        }
        for s in SPLITS
    }
    train = splits["train"]["rating"]
    info = {
        "num_users": sizes[0],
        "num_items": sizes[1],
        "rating_mean": float(train.mean()) if len(train) else 0.0,
        "split_seed": split_seed,
        **info,
    }
    return make_dataset(name, splits, *batch_sizes, input_shape=None, info=info, empty_hint=EMPTY_HINT)


def planted(
    num_users: int,
    num_items: int,
    rank: int,
    noise_std: float,
    observed_fraction: float,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """A generated low-rank ratings matrix, ``seed`` fixing the matrix and which entries are seen."""
    for key, value in (("num_users", num_users), ("num_items", num_items), ("rank", rank)):
        _positive(key, value)
    if not 0.0 < observed_fraction <= 1.0:
        raise ConfigError(f"data.observed_fraction must be in (0, 1], got {observed_fraction}")
    if noise_std < 0:
        raise ConfigError(f"data.noise_std must be >= 0, got {noise_std}")
    rng = np.random.default_rng(seed)
    scale = rank**-0.25  # entries of U V^T then have variance rank * scale^4 = 1
    truth = (rng.normal(0, scale, (num_users, rank)) @ rng.normal(0, scale, (num_items, rank)).T).astype(
        np.float32
    )
    users, items = np.nonzero(rng.random((num_users, num_items)) < observed_fraction)
    clean = truth[users, items]
    noisy = clean + rng.normal(0, noise_std, len(clean)).astype(np.float32)
    rows = random_split(len(users), test_fraction, val_fraction, split_seed)
    test, train = rows["test"], rows["train"]
    baselines = {
        "oracle": float(np.sqrt(np.mean((noisy[test] - clean[test]) ** 2))),
        "train_mean": float(np.sqrt(np.mean((noisy[test] - noisy[train].mean()) ** 2))),
    }
    info = {"rank": rank, "noise_std": noise_std, "seed": seed, "baseline_test_rmse": baselines}
    return ratings_dataset(
        "planted_ratings",
        users,
        items,
        noisy,
        (num_users, num_items),
        (test_fraction, val_fraction, split_seed),
        (batch_size, eval_batch_size),
        info,
    )


def _read_all(source: object) -> list[dict]:
    try:
        return source.__getitems__(list(range(len(source))))  # one batched read
    except (TypeError, AttributeError):  # tfds.testing.mock_data's source reads one at a time
        return [source[i] for i in range(len(source))]


def movielens(
    name: str,
    data_dir: str,
    test_fraction: float,
    val_fraction: float,
    split_seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> Dataset:
    """TFDS MovieLens ratings (one "train" split) as dense (user, item, rating) triples."""
    import tensorflow_datasets.structured.movielens  # noqa: F401  registers the movielens builders

    from research.data.tfds_source import open_tfds

    builder, sources = open_tfds(name, os.path.expanduser(data_dir), {"train": "train"})
    records = _read_all(sources["train"])
    user_ids, users = np.unique([str(r["user_id"]) for r in records], return_inverse=True)
    item_ids, items = np.unique([str(r["movie_id"]) for r in records], return_inverse=True)
    ratings = np.array([float(r["user_rating"]) for r in records], np.float32)
    info = {"user_ids": user_ids.tolist(), "item_ids": item_ids.tolist(), "version": str(builder.version)}
    return ratings_dataset(
        name.replace("/", "_"),
        users,
        items,
        ratings,
        (len(user_ids), len(item_ids)),
        (test_fraction, val_fraction, split_seed),
        (batch_size, eval_batch_size),
        info,
    )
