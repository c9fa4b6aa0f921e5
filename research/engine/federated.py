"""Federated training: the clients are the replicas of one program, and a train step is a round.

``FederatedTask`` wraps any task whose data has examples to partition, so the loop trains it
as it trains any task (big_vision's rule: a paradigm that does not fit the loop gets hooks,
here ``Rounds``: the feed and the shardings). One round, one compiled program:

1. the sampler (a key in the state) picks ``clients_per_round`` of the K clients;
2. the global model (the task's ``reusable`` keys) is broadcast to them;
3. each runs the task's own ``train_step`` for ``local_steps`` (or ``local_epochs`` of its
   own examples), vmapped over the clients, on batches drawn from its partition only;
4. the server averages the clients' models weighted by their example counts and applies its
   optimizer (an optax transform) to the averaged delta of the trainable keys: SGD at rate 1
   is FedAvg, with momentum FedAvgM (Hsu et al. 2019), Adam/Yogi are FedAdam/FedYogi (Reddi et
   al. 2021). Other model variables (batch statistics) take the weighted mean.

FedProx (Li et al. 2020) adds ``mu * (w - w_global)`` to every local gradient through
``proximal``, an optax transform in front of the client optimizer whose anchor the round sets
to the broadcast weights: the task never knows. The state keeps the task's own keys (the
global model, which every evaluator reads unchanged) and under ``federated``: every client's
state (its optimizer state persists across rounds), the server's optimizer state, the sampler
key, the round, and the partition, so a resumed run sees the same partition and the same
draws. Each round a client walks a fresh shuffle of its own examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from research.data import partition as partition_lib
from research.data.base import Dataset
from research.engine.api import Evaluator
from research.engine.federated_eval import ClientEvaluation
from research.engine.settings import FederatedConfig, TrainerConfig
from research.engine.sharding import replicated, state_shardings
from research.errors import ConfigError

FED = "federated"  # the state key holding the clients, the server and the sampler
CLIENT_KEYS = 1  # fold_in tag of the clients' init keys (the global model takes the run's key)


class ProximalState(NamedTuple):
    anchor: Any  # the global weights of this round


def proximal(mu: float) -> optax.GradientTransformation:
    """Add ``mu * (params - anchor)`` to the gradient: FedProx's term, without the task's loss."""

    def init(params: Any) -> ProximalState:
        return ProximalState(jax.tree.map(jnp.asarray, params))

    def update(updates: Any, state: ProximalState, params: Any = None) -> tuple[Any, ProximalState]:
        pulled = jax.tree.map(lambda g, w, a: g + mu * (w - a).astype(g.dtype), updates, params, state.anchor)
        return pulled, state

    return optax.GradientTransformation(init, update)


def set_anchor(opt_state: Any, params: Any) -> Any:
    """The proximal transform's anchor in ``opt_state`` set to ``params``."""
    return jax.tree.map(
        lambda s: ProximalState(params) if isinstance(s, ProximalState) else s,
        opt_state,
        is_leaf=lambda s: isinstance(s, ProximalState),
    )


def client_optimizer(make_optimizer: Callable, settings: FederatedConfig) -> Callable:
    """The task's optimizer factory, behind the proximal term with ``algorithm=fedprox``."""
    if settings.algorithm != "fedprox":
        return make_optimizer

    def make(total_updates: int) -> optax.GradientTransformation:
        return optax.chain(proximal(settings.mu), make_optimizer(total_updates))

    make.freeze = getattr(make_optimizer, "freeze", ())  # type: ignore[attr-defined]
    return make


def server_optimizer(settings: FederatedConfig) -> optax.GradientTransformation:
    """The server's step on the pseudo-gradient (minus the averaged client delta)."""
    s = settings
    if s.server_optimizer == "adam":
        return optax.adam(s.server_lr, b1=s.server_b1, b2=s.server_b2, eps=s.server_eps)
    if s.server_optimizer == "yogi":
        return optax.yogi(s.server_lr, b1=s.server_b1, b2=s.server_b2, eps=s.server_eps)
    return optax.sgd(s.server_lr, momentum=s.server_momentum)


def plan(trainer: TrainerConfig, dataset: Dataset | None, seed: int) -> partition_lib.Partition | None:
    """The clients' partition of the train split, or None when federated training is off."""
    settings = trainer.federated
    k = settings.clients
    if k is None:
        return None
    if trainer.num_seeds > 1 or trainer.vmap_over is not None or trainer.cv_folds is not None:
        raise ConfigError(
            "trainer.federated trains the clients as the replicas of one program: it does not combine "
            "with trainer.num_seeds > 1, trainer.vmap_over or trainer.cv_folds (use a multirun over seed)"
        )
    if dataset is None or not dataset.splits["train"].in_memory:
        raise ConfigError(
            "trainer.federated needs a dataset whose train split is in memory (data.in_memory=true)"
        )
    if (settings.local_steps is None) == (settings.local_epochs is None):
        raise ConfigError("trainer.federated: set one of local_steps and local_epochs, the other to null")
    if settings.clients_per_round is not None and settings.clients_per_round > k:
        raise ConfigError(
            f"trainer.federated.clients_per_round={settings.clients_per_round} exceeds clients={k}"
        )
    if settings.server_momentum is not None and settings.server_optimizer != "sgd":
        raise ConfigError(
            "trainer.federated.server_momentum is FedAvgM's, for server_optimizer=sgd: set it to null "
            f"with server_optimizer={settings.server_optimizer} (use server_b1)"
        )
    arrays = dataset.splits["train"].arrays()
    num = len(next(iter(arrays.values())))
    if settings.partition == "iid":
        return partition_lib.iid(num, k, seed)
    return partition_lib.dirichlet(arrays.get("label"), k, settings.alpha, seed)


def local_steps(settings: FederatedConfig, partition: partition_lib.Partition, batch_size: int) -> int:
    """Local steps of a round: ``local_steps``, or ``local_epochs`` of the largest client's examples
    (a smaller client stops at its own count)."""
    if settings.local_steps is not None:
        return settings.local_steps
    return math.ceil(settings.local_epochs * int(partition.counts.max()) / batch_size)


class FederatedTask:
    """``task`` trained by rounds over the clients of ``partition``; its declarations are the task's."""

    def __init__(
        self, task: Any, partition: partition_lib.Partition, settings: FederatedConfig, dataset: Dataset
    ):
        self.task, self.partition, self.settings, self.dataset = task, partition, settings, dataset
        self.batch_size = dataset.batch_size
        self.clients = partition.clients
        self.per_round = settings.clients_per_round or self.clients
        self.local_steps = local_steps(settings, partition, self.batch_size)
        self.server_tx = server_optimizer(settings)
        for name in ("metric", "metric_mode", "headline", "fields", "finite", "counters", "frozen"):
            setattr(self, name, getattr(task, name, ()))
        self.reusable = tuple(task.reusable)
        self.trainable = tuple(task.trainable)
        # The health signals of the clients' optimizers (per client, as per seed elsewhere).
        self.optimized = ((self.trainable[0], FED),) if self.trainable else ()

    def __getattr__(self, name: str) -> Any:
        """Capabilities of the task (``logits``, ``eval_model``): they read the global model."""
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)

    def init(self, rng: jax.Array, batch: Any) -> dict:
        """The task's state (the global model), and under ``federated`` every client's state."""
        state = self.task.init(rng, batch)
        keys = jax.random.split(jax.random.fold_in(rng, CLIENT_KEYS), self.clients + 1)
        clients = jax.vmap(self.task.init, in_axes=(0, None))(keys[1:], batch)
        state[FED] = {
            "clients": clients,
            "server": self.server_tx.init({k: state[k] for k in self.trainable}),
            "sampler": keys[0],
            "round": jnp.zeros((), jnp.int32),
            "partition": jnp.asarray(self.partition.indices),
            "counts": jnp.asarray(self.partition.counts),
        }
        return state

    def train_step(self, state: dict, data: dict) -> tuple[dict, dict]:
        """One round over ``data``, the whole train split (on device)."""
        fed = state[FED]
        sampler, pick, shuffle = jax.random.split(fed["sampler"], 3)
        every = self.per_round == self.clients  # no sample to take out and put back
        chosen = jnp.arange(self.clients)
        if not every:
            chosen = jnp.sort(jax.random.choice(pick, self.clients, (self.per_round,), replace=False))
        take = (lambda a: a) if every else (lambda a: a[chosen])
        clients = self._broadcast(state, jax.tree.map(take, fed["clients"]))
        rows, counts = take(fed["partition"]), take(fed["counts"])
        keys = jax.random.split(shuffle, self.per_round)
        local = jax.vmap(self._local, in_axes=(0, 0, 0, 0, None))
        clients, metrics = local(clients, rows, counts, keys, data)
        weights = counts.astype(jnp.float32) / jnp.sum(counts).astype(jnp.float32)
        state = {**state, **self._aggregate(state, clients, weights)}
        state[FED] = {
            **fed,
            "clients": clients
            if every
            else jax.tree.map(lambda a, c: a.at[chosen].set(c), fed["clients"], clients),
            "server": state.pop("_server"),
            "sampler": sampler,
            "round": fed["round"] + 1,
        }
        summed = set(self.counters)
        out = {k: jnp.sum(v) if k in summed else jnp.sum(weights * v) for k, v in metrics.items()}
        return state, out

    def _broadcast(self, state: dict, clients: dict) -> dict:
        """The global model's floating variables into each chosen client (its RNG streams stay its
        own), and with FedProx the global weights as the anchor of the proximal term."""
        n = self.per_round

        def mix(g: jax.Array, c: jax.Array) -> jax.Array:
            return jnp.broadcast_to(g, c.shape) if jnp.issubdtype(g.dtype, jnp.floating) else c

        out = {**clients, **{k: jax.tree.map(mix, state[k], clients[k]) for k in self.reusable}}
        if self.settings.algorithm == "fedprox":
            for model, opt in self.task.optimized:
                stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), state[model])
                out[opt] = set_anchor(out[opt], stacked)
        return out

    def _local(self, client: dict, row: jax.Array, count: jax.Array, key: jax.Array, data: dict) -> tuple:
        """One client's local steps on a fresh shuffle of its own examples; with local epochs,
        the steps past its own count leave it unchanged."""
        slots = jnp.arange(row.shape[0])
        order = row[jnp.argsort(jnp.where(slots < count, jax.random.uniform(key, slots.shape), 2.0))]
        b = self.batch_size
        own_steps = self.local_steps
        if self.settings.local_epochs is not None:
            own_steps = jnp.ceil(self.settings.local_epochs * count / b).astype(jnp.int32)

        def body(c: dict, step: jax.Array) -> tuple:
            positions = (step * b + jnp.arange(b)) % count
            batch = jax.tree.map(lambda a: a[order[positions]], data)
            new, metrics = self.task.train_step(c, batch)
            if self.settings.local_epochs is None:
                return new, {k: v.astype(jnp.float32) for k, v in metrics.items()}
            active = step < own_steps
            new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, c)
            return new, {k: jnp.where(active, v, 0).astype(jnp.float32) for k, v in metrics.items()}

        client, metrics = jax.lax.scan(body, client, jnp.arange(self.local_steps))
        taken = jnp.minimum(own_steps, self.local_steps).astype(jnp.float32)
        counters = set(self.counters)
        return client, {k: v.sum() if k in counters else v.sum() / taken for k, v in metrics.items()}

    def _aggregate(self, state: dict, clients: dict, weights: jax.Array) -> dict:
        """The weighted mean of the clients' models; the server's step on the trainable keys."""

        def mean(g: jax.Array, c: jax.Array) -> jax.Array:
            if not jnp.issubdtype(g.dtype, jnp.floating):
                return g
            return jnp.tensordot(weights, c.astype(jnp.float32), axes=1).astype(g.dtype)

        averaged = {k: jax.tree.map(mean, state[k], clients[k]) for k in self.reusable}
        params = {k: state[k] for k in self.trainable}
        pseudo_grad = jax.tree.map(lambda w, a: w - a, params, {k: averaged[k] for k in self.trainable})
        updates, server = self.server_tx.update(pseudo_grad, state[FED]["server"], params)
        return {**averaged, **optax.apply_updates(params, updates), "_server": server}

    def evaluators(self) -> dict[str, Evaluator]:
        """The task's own, on the global model; and each client's score on its own examples."""
        own = self.task.evaluators()
        clients = ClientEvaluation(own, self.dataset, self.partition, self.settings.client_eval_examples)
        return {**own, "clients": clients}


class Rounds:  # an engine.api.Paradigm
    """The loop's hooks for federated training: a feed of rounds, and where the clients live."""

    def __init__(self, task: FederatedTask):
        self.task = task
        per_round = task.per_round * task.local_steps * task.batch_size
        self.examples_per_step = per_round  # examples of one round, for train/examples_per_s

    def feed(self, dataset: Dataset, mesh: Any) -> RoundFeed:
        return RoundFeed(dataset, mesh)

    def shardings(self, mesh: Any, abstract: dict, rules: Any) -> dict:
        """The global state by the partition rules; the clients split over the mesh's data axis
        when it divides their number (replicated otherwise), the rest of ``federated`` replicated."""
        out = state_shardings(mesh, {k: v for k, v in abstract.items() if k != FED}, rules)
        ways = mesh.shape["data"]
        split = ways > 1 and self.task.clients % ways == 0

        def client(a: Any) -> NamedSharding:
            return NamedSharding(mesh, P("data")) if split else replicated(mesh)

        fed = jax.tree.map(lambda a: replicated(mesh), abstract[FED])
        fed["clients"] = jax.tree.map(client, abstract[FED]["clients"])
        return {**out, FED: fed}


class RoundFeed:
    """The whole train split on device, handed to every round; a round needs no indices."""

    by_step = True
    steps_per_epoch = 1  # an evaluation every round unless trainer.eval_every says otherwise
    iterator = None

    def __init__(self, dataset: Dataset, mesh: Any):
        arrays = dataset.splits["train"].arrays()
        self.batch_size = dataset.batch_size
        self.data = jax.device_put(arrays, replicated(mesh))

    def example(self) -> dict:
        return jax.tree.map(lambda a: a[: self.batch_size], self.data)

    @staticmethod
    def gather(data: dict, x: Any) -> dict:
        return data

    def xs(self, step: int, n: int) -> np.ndarray:
        return np.zeros((n,), np.int32)

    def restored(self) -> None:
        """Nothing to restore: the sampler and the partition are in the state."""
