"""Top-k ranking metrics over held-out interactions: recall@k and NDCG@k per user, averaged.

For each user the candidates are all items except those the user met outside the split
evaluated (training items, and val items when testing); every interaction of the user in the
split is relevant. Definitions, as Microsoft Recommenders (``recall_at_k``, ``ndcg_at_k``) and
RecBole (``Recall``, ``NDCG``) compute them with binary relevance:

  recall@k = |top-k ∩ relevant| / |relevant|            (not / min(k, |relevant|))
  NDCG@k   = DCG@k / IDCG@k,  DCG@k = sum over hits at rank r (1-based) <= k of 1 / log2(r + 1),
             IDCG@k = sum_{r=1}^{min(k, |relevant|)} 1 / log2(r + 1)  (the ideal ordering)

averaged over the users with at least one relevant item (0 when no user has one). The whole
score matrix (users x items) is formed on device: sized for MovieLens-100k/1M, not for
catalogues of millions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.engine.api import Result, Schedule

# scores(state) -> (num_users, num_items): every user's score of every item.
ScoresFn = Callable[[Any], jax.Array]


def metric_names(ks: Sequence[int]) -> tuple[str, ...]:
    return tuple(f"{m}_at_{k}" for k in ks for m in ("recall", "ndcg"))


def ranking_metrics(
    scores: jax.Array, relevant: jax.Array, exclude: jax.Array, ks: Sequence[int]
) -> dict[str, jax.Array]:
    """recall@k and NDCG@k for each k, averaged over users with a relevant item (see the module)."""
    top_k = max(ks)
    masked = jnp.where(exclude, -jnp.inf, scores)
    _, top = jax.lax.top_k(masked, top_k)  # (U, top_k) item indices, best first
    hits = jnp.take_along_axis(relevant, top, axis=1).astype(jnp.float32)
    num_relevant = relevant.sum(axis=1)
    counted = num_relevant > 0
    users = jnp.maximum(counted.sum(), 1)
    discounts = 1.0 / jnp.log2(jnp.arange(top_k, dtype=jnp.float32) + 2.0)
    ideal = jnp.cumsum(discounts)
    out = {}
    for k in ks:
        found = hits[:, :k].sum(axis=1)
        recall = found / jnp.maximum(num_relevant, 1)
        dcg = (hits[:, :k] * discounts[:k]).sum(axis=1)
        idcg = ideal[jnp.clip(jnp.minimum(num_relevant, k) - 1, 0, k - 1)]
        out[f"recall_at_{k}"] = jnp.where(counted, recall, 0.0).sum() / users
        out[f"ndcg_at_{k}"] = jnp.where(counted, dcg / idcg, 0.0).sum() / users
    return out


class Ranking:
    """The ranking metrics of ``scores(state)`` on a split whose batches hold ``user`` and ``item``.

    ``seen`` (users x items, bool) marks every interaction of every split: those outside the
    split evaluated are taken out of the candidates.
    """

    needs_data = True

    def __init__(
        self, scores: ScoresFn, seen: np.ndarray, ks: Sequence[int], schedule: Schedule | None = None
    ):
        self.scores, self.seen, self.ks = scores, np.asarray(seen, bool), tuple(int(k) for k in ks)
        self.schedule = schedule or Schedule()
        self._program = None

    def metric_names(self) -> tuple[str, ...]:
        return metric_names(self.ks)

    def evaluate(self, state: Any, batches: dict, weights: jax.Array) -> dict[str, jax.Array]:
        def body(acc: jax.Array, row: tuple) -> tuple:
            batch, w = row
            return acc.at[batch["user"], batch["item"]].add(w), None

        zero = jnp.zeros(self.seen.shape, jnp.float32)
        in_split, _ = jax.lax.scan(body, zero, (batches, weights))
        relevant = in_split > 0
        return ranking_metrics(self.scores(state), relevant, jnp.asarray(self.seen) & ~relevant, self.ks)

    def program(self, ctx: Any) -> Any:
        if self._program is None:
            self._program = jax.jit(ctx.per_replica(self.evaluate, in_axes=(0, None, None)))
        return self._program

    def prepare(self, ctx: Any, state: Any, data: tuple) -> None:
        ctx.submit(self.program(ctx), state, *data)

    def __call__(self, ctx: Any, state: Any, data: tuple) -> Result:
        return Result(jax.device_get(ctx.run(self.program(ctx), state, *data)))
