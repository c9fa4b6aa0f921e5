"""Recommendation from (user, item, rating) triples: explicit or implicit feedback.

The model (``research/models/recommender.py``) scores a pair as the dot of a user and an item
encoding. Losses (``loss``):

- ``mse``: explicit feedback, squared error on the rating (val/rmse picks the checkpoint);
- ``bpr``: implicit, every training pair a positive, one uniform random item its negative,
  -log sigmoid(s(u, i) - s(u, j)) (Rendle et al. 2009);
- ``softmax``: implicit, sampled softmax over the batch's items (in-batch negatives, as TFRS's
  retrieval task; an item twice in a batch is a false negative there too).

``l2`` penalises the squared norms of the batch's user and item embeddings (per example, the
classic matrix-factorisation regulariser). Every loss is evaluated by recall@k and NDCG@k
(``research/evaluators/ranking.py``); ``mse`` also by rmse and mae, next to the data's
baselines (the planted matrix's oracle RMSE) where it records them. ``num_users``/``num_items``
null take the data's; every id of every split is checked against them at build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research import precision as precision_lib
from research.data.arrays import SPLITS
from research.data.base import EVAL_WEIGHT, Dataset
from research.engine.api import Evaluator, Schedule
from research.errors import ConfigError
from research.evaluators.ranking import Ranking
from research.evaluators.state_function import StateFunction
from research.evaluators.sums import Sums
from research.tasks.base import Batch, Metrics, State, require_fields
from research.tasks.supervised import SupervisedTask, train_arrays

LOSSES = ("mse", "bpr", "softmax")


def table_size(key: str, given: int | None, info: dict, ids: list[np.ndarray], name: str) -> int:
    """``given``, else the data's ``info[key]``, else 1 + the largest id; every id checked against it."""
    size = given if given is not None else info.get(key, max(int(a.max(initial=-1)) for a in ids) + 1)
    what = key.removeprefix("num_").removesuffix("s")
    low = min(int(a.min(initial=0)) for a in ids)
    high = max(int(a.max(initial=-1)) for a in ids)
    if size <= 0 or low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ConfigError(
            f"data={name} holds {what} id {bad} outside [0, {size}) (task.{key}={size}): "
            f"set task.{key} to at least {high + 1} or give the data dense ids from 0"
        )
    return int(size)


class RecommendationTask(SupervisedTask):
    """Trains ``model(num_users=, num_items=, rngs=...)`` on ``loss`` over ``user``/``item``/``rating``."""

    fields = ("user", "item", "rating")

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        loss: str = "mse",
        l2: float = 0.0,
        ks: Sequence[int] = (10,),
        num_users: int | None = None,
        num_items: int | None = None,
        precision: precision_lib.Policy | None = None,
    ):
        train_arrays(dataset, "recommendation")
        require_fields(
            self.fields, "recommendation", dataset, "choose a ratings data= (planted_ratings, movielens)"
        )
        if loss not in LOSSES:
            raise ConfigError(f"task.loss={loss!r} must be one of {', '.join(LOSSES)}")
        if l2 < 0:
            raise ConfigError(f"task.l2={l2} must be >= 0")
        arrays = [dataset.splits[s].arrays() for s in SPLITS]
        self.num_users = table_size(
            "num_users", num_users, dataset.info, [a["user"] for a in arrays], dataset.name
        )
        self.num_items = table_size(
            "num_items", num_items, dataset.info, [a["item"] for a in arrays], dataset.name
        )
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) <= 0 or max(self.ks) > self.num_items:
            raise ConfigError(
                f"task.ks={list(self.ks)} must be positive and at most the {self.num_items} items"
            )
        self.seen = np.zeros((self.num_users, self.num_items), bool)
        for a in arrays:
            self.seen[a["user"], a["item"]] = True
        self.loss_kind, self.l2 = loss, float(l2)
        self.metric, self.metric_mode = (
            ("val/rmse", "min") if loss == "mse" else (f"val/ndcg_at_{self.ks[0]}", "max")
        )
        self.baselines = dict(dataset.info.get("baseline_test_rmse") or {}) if loss == "mse" else {}
        kwargs = {
            "num_users": self.num_users,
            "num_items": self.num_items,
            "global_bias": float(dataset.info.get("rating_mean", 0.0)) if loss == "mse" else 0.0,
        }
        super().__init__(model, make_optimizer, total_steps, dataset, kwargs, precision)

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        if self.loss_kind == "bpr":  # the negatives, drawn apart from the transform's key
            key = jax.random.fold_in(jax.random.fold_in(state["rng"], state["step"]), 1)
            batch = {**batch, "negative": jax.random.randint(key, batch["item"].shape, 0, self.num_items)}
        return super().train_step(state, batch)

    def penalty(self, model: nnx.Module, batch: Batch) -> jax.Array:
        if not self.l2:
            return jnp.zeros(())
        p, q = model.factors(batch["user"], batch["item"])
        return self.l2 * jnp.mean(jnp.sum(p**2, -1) + jnp.sum(q**2, -1))

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        users = self.precision.cast_output(model.encode_users(batch["user"]))
        items = self.precision.cast_output(model.encode_items(batch["item"]))
        if self.loss_kind == "mse":
            err = jnp.sum(users * items, -1) - batch["rating"]
            loss, metrics = jnp.mean(err**2), {"mse": jnp.mean(err**2)}
        elif self.loss_kind == "bpr":
            negatives = self.precision.cast_output(model.encode_items(batch["negative"]))
            margin = jnp.sum(users * (items - negatives), -1)
            loss, metrics = -jnp.mean(jax.nn.log_sigmoid(margin)), {"pair_accuracy": jnp.mean(margin > 0)}
        else:
            logits = users @ items.T
            labels = jnp.arange(logits.shape[0])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            metrics = {"in_batch_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
        return loss + self.penalty(model, batch), metrics

    def scores(self, state: State) -> jax.Array:
        """Every user's score of every item (users x items)."""
        model = self.eval_model(state)
        users = model.encode_users(jnp.arange(self.num_users))
        return self.precision.cast_output(users @ model.encode_items(jnp.arange(self.num_items)).T)

    def eval_step(self, state: State, batch: Batch) -> Metrics:
        pred = self.precision.cast_output(self.eval_model(state)(batch["user"], batch["item"]))
        w, err = batch[EVAL_WEIGHT], pred - batch["rating"]
        return {"n": jnp.sum(w), "sse": jnp.sum(w * err**2), "sae": jnp.sum(w * jnp.abs(err))}

    @staticmethod
    def finalize(sums: Metrics) -> Metrics:
        return {"rmse": jnp.sqrt(sums["sse"] / sums["n"]), "mae": sums["sae"] / sums["n"]}

    def evaluators(self) -> dict[str, Evaluator]:
        out: dict[str, Evaluator] = {"ranking": Ranking(self.scores, self.seen, self.ks)}
        if self.loss_kind == "mse":
            out["ratings"] = Sums(self.eval_step, self.finalize, ("rmse", "mae"))
        if self.baselines:  # constants of the data, recorded once, next to test/rmse
            constants = {f"baseline_{k}_rmse": float(v) for k, v in self.baselines.items()}
            out["baselines"] = StateFunction(
                lambda state: {k: jnp.float32(v) for k, v in constants.items()},
                tuple(constants),
                Schedule(every=0, final=True, prefix="test"),
            )
        return out
