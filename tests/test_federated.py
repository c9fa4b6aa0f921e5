"""Federated training (research/engine/federated.py, research/data/partition.py).

The server's aggregate against a hand computation of the example-weighted mean, client data
that never mixes (a probe task counts the examples each client trains on), a run SIGKILLed
mid-round that reruns bit-identically, and the bad inputs as one line.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.data import partition as partition_lib
from research.data.arrays import make_dataset
from research.engine import federated
from research.engine.settings import FederatedConfig, TrainerConfig
from research.errors import ConfigError
from tests.checkpoints import ENDLESS, assert_same_final_state, latest_checkpoint, logged_steps, signal_run
from tests.conftest import TINY, run_train
from tests.test_resume_replicas import results as replica_results

N = 60  # examples of the tiny arrays


def tiny_dataset(batch_size: int = 4):
    labels = np.arange(N) % 5
    split = {"image": np.arange(N, dtype=np.float32)[:, None], "label": labels.astype(np.int32)}
    splits = {"train": split, "val": split, "test": split}
    return make_dataset("tiny", splits, batch_size, 8, input_shape=(1,), num_classes=5)


class Probe:
    """Counts which train examples (``image`` holds the example's index) each client steps on; its
    one weight moves by the mean index it saw, so the aggregate is easy to compute by hand."""

    metric, metric_mode, headline, fields, finite, counters, frozen = (
        "val/loss",
        "min",
        (),
        (),
        ("loss",),
        (),
        (),
    )
    reusable = trainable = ("params",)
    optimized = (("params", "opt_state"),)

    def __init__(self):
        self.tx = optax.sgd(1.0)

    def init(self, rng, batch):
        params = {"w": jnp.zeros((), jnp.float32)}
        return {"params": params, "opt_state": self.tx.init(params), "seen": jnp.zeros(N, jnp.int32)}

    def train_step(self, state, batch):
        index = batch["image"][:, 0].astype(jnp.int32)
        grads = {"w": -jnp.mean(batch["image"])}
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}
        return {**state, **new, "seen": state["seen"].at[index].add(1)}, {"loss": jnp.float32(0.0)}

    def evaluators(self):
        return {}


def make(settings: FederatedConfig, batch_size: int = 4, task=None):
    dataset = tiny_dataset(batch_size)
    trainer = TrainerConfig(federated=settings)
    partition = federated.plan(trainer, dataset, seed=0)
    fed = federated.FederatedTask(task or Probe(), partition, settings, dataset)
    arrays = dataset.splits["train"].arrays()
    state = jax.jit(fed.init)(jax.random.PRNGKey(0), {k: v[:batch_size] for k, v in arrays.items()})
    data = jax.tree.map(jnp.asarray, arrays)
    return fed, state, data, partition


def test_fedavg_aggregate_is_the_example_weighted_mean_of_the_client_updates() -> None:
    settings = FederatedConfig(
        clients=4, clients_per_round=3, local_steps=2, partition="dirichlet", alpha=1.0
    )
    fed, state, data, partition = make(settings)
    assert len(set(partition.counts.tolist())) > 1, "unequal clients, or the weights are not tested"
    step = jax.jit(fed.train_step)
    for _ in range(3):  # several rounds: different samples of 3 of the 4 clients
        before = float(state["params"]["w"])
        rounds_before = np.asarray(state["federated"]["clients"]["seen"]).sum(1)
        state, _ = step(state, data)
        trained = np.flatnonzero(np.asarray(state["federated"]["clients"]["seen"]).sum(1) > rounds_before)
        assert len(trained) == 3
        client_w = np.asarray(state["federated"]["clients"]["params"]["w"])[trained]
        counts = partition.counts[trained].astype(np.float64)
        deltas = client_w - before
        expected = before + np.sum(counts * deltas) / counts.sum()
        assert float(state["params"]["w"]) == pytest.approx(expected, rel=1e-6)
        # the unweighted mean differs: the weights matter here
        assert abs(before + deltas.mean() - expected) > 1e-3

    adam = dataclasses.replace(settings, server_optimizer="adam", server_lr=0.1)
    fed, state, data, partition = make(adam)
    state, _ = jax.jit(fed.train_step)(state, data)
    trained = np.flatnonzero(np.asarray(state["federated"]["clients"]["seen"]).sum(1))
    counts = partition.counts[trained].astype(np.float64)
    delta = np.sum(counts * np.asarray(state["federated"]["clients"]["params"]["w"])[trained]) / counts.sum()
    tx = optax.adam(0.1, b1=0.9, b2=0.99, eps=1e-3)
    by_hand, _ = tx.update({"w": jnp.float32(-delta)}, tx.init({"w": jnp.float32(0.0)}))
    assert float(state["params"]["w"]) == pytest.approx(float(by_hand["w"]), rel=1e-5)


def test_fedavgm_carries_the_servers_momentum_across_rounds() -> None:
    """FedAvgM: the server's step is lr * (momentum * last step + this round's averaged delta)."""
    settings = FederatedConfig(clients=3, local_steps=2, server_lr=0.5, server_momentum=0.9)
    fed, state, data, partition = make(settings)
    step = jax.jit(fed.train_step)
    velocity, moves = 0.0, []
    for _ in range(3):
        before = float(state["params"]["w"])
        rounds_before = np.asarray(state["federated"]["clients"]["params"]["w"]).copy()
        state, _ = step(state, data)
        client_w = np.asarray(state["federated"]["clients"]["params"]["w"])
        delta = np.sum(partition.counts * (client_w - before)) / partition.counts.sum()
        velocity = 0.9 * velocity + delta
        moves.append(float(state["params"]["w"]) - before)
        assert moves[-1] == pytest.approx(0.5 * velocity, rel=1e-5)
        assert not np.allclose(client_w, rounds_before)
    assert abs(moves[-1] - 0.5 * delta) > 1e-4, "the momentum changed the last step"


@pytest.mark.parametrize("local", [{"local_steps": 5}, {"local_steps": None, "local_epochs": 1.0}])
def test_each_client_trains_only_on_its_own_partition(local: dict) -> None:
    settings = FederatedConfig(clients=5, partition="dirichlet", alpha=0.3, **local)
    fed, state, data, partition = make(settings, batch_size=3)
    for _ in range(2):
        state, _ = jax.jit(fed.train_step)(state, data)
    seen = np.asarray(state["federated"]["clients"]["seen"])
    owner = np.full(N, -1)
    for c in range(partition.clients):
        owner[partition.members(c)] = c
    assert (owner >= 0).all(), "the partition covers the train split"
    for c in range(partition.clients):
        assert set(np.flatnonzero(seen[c])) <= set(partition.members(c).tolist()), c
        if settings.local_epochs:  # an epoch a round: every example of its own, twice over 2 rounds
            assert (seen[c][partition.members(c)] >= 2).all(), c


def test_partitions_are_deterministic_and_dirichlet_skews_the_labels() -> None:
    labels = np.repeat(np.arange(10), 100)
    a = partition_lib.dirichlet(labels, 10, 0.1, seed=3)
    b = partition_lib.dirichlet(labels, 10, 0.1, seed=3)
    np.testing.assert_array_equal(a.indices, b.indices)
    iid = partition_lib.iid(len(labels), 10, seed=3)
    assert sorted(np.concatenate([iid.members(c) for c in range(10)]).tolist()) == list(range(1000))
    assert (partition_lib.label_histogram(a, labels, 10) > 0).sum(1).mean() < 6
    assert (partition_lib.label_histogram(iid, labels, 10) > 0).sum(1).min() == 10


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"clients": N + 1}, f"trainer.federated.clients={N + 1} exceeds the {N} examples"),
        (
            {"clients": 3, "partition": "dirichlet", "alpha": 0.0},
            "trainer.federated.alpha must be a positive",
        ),
        (
            {"clients": 3, "partition": "dirichlet", "alpha": -1.0},
            "trainer.federated.alpha must be a positive",
        ),
        ({"clients": 3, "clients_per_round": 4}, "clients_per_round=4 exceeds clients=3"),
        ({"clients": 3, "local_epochs": 1.0}, "set one of local_steps and local_epochs"),
        ({"clients": 3, "server_momentum": 1.0}, "server_momentum must be null or in"),
        (
            {"clients": 3, "server_optimizer": "adam", "server_momentum": 0.9},
            "server_momentum is FedAvgM's, for server_optimizer=sgd",
        ),
    ],
)
def test_bad_federated_settings_are_one_line(settings: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as raised:
        trainer = TrainerConfig.from_dict({"federated": settings})
        federated.plan(trainer, tiny_dataset(), seed=0)
    assert "\n" not in str(raised.value)


def test_bad_federated_settings_from_the_command_line_are_one_line(tmp_path: Path) -> None:
    for override, words in [
        ("trainer.federated.clients=100000", "trainer.federated.clients=100000 exceeds the"),
        ("trainer.federated.alpha=0", "trainer.federated.alpha must be a positive number"),
    ]:
        proc = run_train(
            "+experiment=digits_mlp", "trainer.federated.clients=4", override, *TINY,
            f"hydra.run.dir={tmp_path / 'run'}", check=False,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {words}"[:40]), proc.stderr[-500:]
        assert not (tmp_path / "run").exists()


def results(run_dir: Path) -> dict:
    """What test_resume_replicas compares, and the per-client scores."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return {**replica_results(run_dir), **{k: v for k, v in summary.items() if k.startswith("clients/")}}


ROUNDS, EVERY = 8, 2
RUN = (
    "+experiment=digits_mlp",
    "optimizer/schedule=constant",
    "model.hidden_sizes=[16]",
    "trainer.federated.clients=4",
    "trainer.federated.clients_per_round=2",
    "trainer.federated.local_steps=3",
    "trainer.federated.partition=dirichlet",
    "trainer.federated.algorithm=fedprox",
    "trainer.federated.server_optimizer=adam",
    "trainer.federated.server_lr=0.01",
    "trainer.steps_per_call=1",
    "trainer.log_every=1",
    f"trainer.eval_every={EVERY}",
    f"trainer.checkpoint.every={EVERY}",
    "trainer.plots=false",
    *TINY,
)


@pytest.mark.slow
def test_federated_run_sigkilled_mid_round_reruns_bit_identically(tmp_path: Path) -> None:
    """The round, the sampler, every client's state, the server's optimizer and the partition come
    back from the checkpoint: the rerun ends where the uninterrupted run does, bit for bit."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish = (*RUN, f"trainer.max_steps={ROUNDS}")
    run_train(*finish, f"hydra.run.dir={straight}")

    def past_first_checkpoint() -> bool:
        return latest_checkpoint(killed) >= EVERY and max(logged_steps(killed)) > latest_checkpoint(killed)

    stop = signal_run((*RUN, ENDLESS, f"hydra.run.dir={killed}"), past_first_checkpoint, signal.SIGKILL)
    assert stop.code == -signal.SIGKILL
    resumed_from = latest_checkpoint(killed)
    assert EVERY <= resumed_from < ROUNDS, resumed_from
    proc = run_train(*finish, f"hydra.run.dir={killed}")
    assert f"resuming from step {resumed_from}" in proc.stdout + proc.stderr
    assert logged_steps(killed) == list(range(1, ROUNDS + 1))
    expected = results(straight)
    assert results(killed) == expected
    assert len(expected["clients/accuracy_per_client"]) == 4
    assert_same_final_state(straight, killed)
