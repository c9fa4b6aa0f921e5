"""Recommendation: ranking metrics against references, a planted matrix recovered, implicit losses
learn, MovieLens through TFDS's mock, and an id out of range as one line through the CLI."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from sklearn.metrics import ndcg_score

from research.data.arrays import make_dataset
from research.data.ratings import movielens, planted
from research.errors import ConfigError
from research.evaluators.ranking import ranking_metrics
from research.models.recommender import MatrixFactorization, TwoTower
from research.tasks.recommendation import RecommendationTask
from tests.conftest import TINY, run_train


def reference_metrics(scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray, k: int) -> tuple:
    """recall@k = hits / |relevant| (Microsoft Recommenders' recall_at_k, RecBole's Recall) by loops;
    NDCG@k by scikit-learn's ndcg_score over each user's candidates; users without relevant items out."""
    recalls, ndcgs = [], []
    for s, rel, ex in zip(scores, relevant, exclude, strict=True):
        if not rel.any():
            continue
        candidates = np.flatnonzero(~ex)
        top = candidates[np.argsort(-s[candidates], kind="stable")[:k]]
        recalls.append(rel[top].sum() / rel.sum())
        ndcgs.append(ndcg_score(rel[candidates][None].astype(float), s[candidates][None], k=k))
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def test_ranking_metrics_by_hand() -> None:
    """One user, 3 relevant items ranked 1st and 3rd (one excluded item ranked above them all)."""
    scores = jnp.array([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]])
    relevant = jnp.zeros((1, 12), bool).at[0, jnp.array([1, 3, 11])].set(True)
    exclude = jnp.zeros((1, 12), bool).at[0, 0].set(True)
    got = ranking_metrics(scores, relevant, exclude, (2, 10))
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert float(got["recall_at_10"]) == pytest.approx(2 / 3)
    assert float(got["ndcg_at_10"]) == pytest.approx((1 + 1 / math.log2(4)) / idcg)
    assert float(got["recall_at_2"]) == pytest.approx(1 / 3)  # / |relevant|, not / min(k, |relevant|)
    assert float(got["ndcg_at_2"]) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ranking_metrics_match_the_references() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 60)).astype(np.float32)
    relevant = rng.random((40, 60)) < 0.08
    exclude = (rng.random((40, 60)) < 0.3) & ~relevant
    relevant[:3] = False  # users without held-out items are left out of the average
    got = ranking_metrics(jnp.asarray(scores), jnp.asarray(relevant), jnp.asarray(exclude), (10,))
    recall, ndcg = reference_metrics(scores, relevant, exclude, 10)
    assert float(got["recall_at_10"]) == pytest.approx(recall, rel=1e-5)
    assert float(got["ndcg_at_10"]) == pytest.approx(ndcg, rel=1e-5)


def fit(task: RecommendationTask, steps: int, seed: int = 0) -> dict:
    """Plain minibatch training of ``task`` on its train split, outside the engine."""
    train = task.dataset.splits["train"].arrays()
    size = task.dataset.batch_size
    state = task.init(jax.random.key(seed), {k: v[:size] for k, v in train.items()})
    step = jax.jit(task.train_step)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.integers(0, len(train["user"]), size)
        state, _ = step(state, {k: v[rows] for k, v in train.items()})
    return state


def evaluate(task: RecommendationTask, state: dict, split: str) -> dict:
    arrays = task.dataset.splits[split].arrays()
    batches = {k: v[None] for k, v in arrays.items()}
    weights = jnp.ones((1, len(arrays["user"])))
    metrics = jax.jit(task.evaluators()["ranking"].evaluate)(state, batches, weights)
    if task.loss_kind == "mse":
        sums = task.eval_step(state, {**arrays, "eval_weight": weights[0]})
        metrics = {**metrics, **task.finalize(sums)}
    return {k: float(v) for k, v in metrics.items()}


def mf(**kwargs) -> functools.partial:
    return functools.partial(MatrixFactorization, **{"rank": 3, "init_scale": 0.1, **kwargs})


def test_matrix_factorisation_recovers_a_planted_low_rank_matrix() -> None:
    """Rank 3, noise 0.3, half of 200 x 150 observed: ~1,400 parameters from ~12,000 ratings can
    get to about 0.3 x sqrt(1 + 1,400 / 12,000) = 1.06 x the oracle; 1.10 leaves room for SGD."""
    data = planted(200, 150, 3, 0.3, 0.5, seed=1, test_fraction=0.1, val_fraction=0.1, split_seed=0,
                   batch_size=256, eval_batch_size=1024)  # fmt: skip
    adam = lambda n: optax.adam(optax.cosine_decay_schedule(1e-2, n))  # noqa: E731
    task = RecommendationTask(mf(), adam, 1500, data, loss="mse", l2=0.01)
    got = evaluate(task, fit(task, 1500), "test")
    oracle = data.info["baseline_test_rmse"]["oracle"]
    assert oracle == pytest.approx(0.3, rel=0.1)
    assert got["rmse"] < 1.10 * oracle, (got, data.info["baseline_test_rmse"])
    assert data.info["baseline_test_rmse"]["train_mean"] > 3 * oracle  # the matrix is far from flat


def block_interactions(batch_size: int) -> object:
    """Two groups of 20 users, each interacting with its own 12 of 24 items; 2 per user held out."""
    users, items, split = [], [], []
    for u in range(40):
        group = np.arange(12) + 12 * (u % 2)
        held = np.random.default_rng(u).choice(group, 4, replace=False)
        for i in group:
            users.append(u)
            items.append(i)
            split.append("val" if i in held[:2] else "test" if i in held[2:] else "train")
    users, items, split = np.array(users), np.array(items), np.array(split)
    splits = {
        s: {"user": users[split == s].astype(np.int32), "item": items[split == s].astype(np.int32),
            "rating": np.ones((split == s).sum(), np.float32)}
        for s in ("train", "val", "test")
    }  # fmt: skip
    return make_dataset("blocks", splits, batch_size, 64, input_shape=None)


@pytest.mark.parametrize(
    ("loss", "model"),
    [
        ("bpr", mf(rank=4)),
        ("softmax", functools.partial(TwoTower, embed_dim=8, hidden_sizes=[16], output_dim=8)),
    ],
)
def test_implicit_losses_learn_which_items_a_user_meets(loss: str, model: object) -> None:
    """Held-out items are the user's group's: NDCG@5 near 1 after training, far above chance."""
    data = block_interactions(batch_size=32)
    task = RecommendationTask(model, lambda n: optax.adam(3e-2), 300, data, loss=loss, ks=[5])
    before = evaluate(task, fit(task, 0), "test")
    after = evaluate(task, fit(task, 300), "test")
    assert task.metric == "val/ndcg_at_5" and task.metric_mode == "max"
    assert before["ndcg_at_5"] < 0.6 and after["ndcg_at_5"] > 0.9, (before, after)
    assert after["recall_at_5"] > 0.95  # 2 relevant among 14 candidates: both in the top 5


def test_an_id_out_of_range_is_one_config_error() -> None:
    data = block_interactions(batch_size=8)
    data.splits["test"].arrays()["user"][0] = -1
    with pytest.raises(ConfigError, match=r"user id -1 outside \[0, 40\)"):
        RecommendationTask(mf(), lambda n: optax.adam(1e-2), 1, data)


def test_movielens_maps_tfds_ids_to_dense_indices(tmp_path: Path) -> None:
    with tfds.testing.mock_data(num_examples=50):
        data = movielens(
            "movielens/100k-ratings", str(tmp_path), 0.2, 0.1, 0, batch_size=8, eval_batch_size=16
        )
    arrays = [data.splits[s].arrays() for s in ("train", "val", "test")]
    assert sum(len(a["user"]) for a in arrays) == 50 and [len(a["user"]) for a in arrays[1:]] == [4, 10]
    users = np.concatenate([a["user"] for a in arrays])
    assert data.info["num_users"] == len(data.info["user_ids"]) == users.max() + 1
    assert set(users) == set(range(data.info["num_users"]))  # dense: every index used
    assert data.info["num_items"] == len(data.info["item_ids"])
    assert all(a["rating"].dtype == np.float32 and a["item"].dtype == np.int32 for a in arrays)


def test_a_user_id_out_of_range_through_the_cli_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_train("+experiment=planted_ratings_mf", "task.num_users=5", "+debug=fast", *TINY,
                     f"hydra.run.dir={run_dir}", check=False, timeout=120)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: data=planted_ratings holds user id 599 outside [0, 5)"), lines
    assert "task.num_users" in lines[0] and not run_dir.exists()
