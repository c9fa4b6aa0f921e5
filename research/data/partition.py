"""Partitions of a training set over federated clients: IID, or Dirichlet label skew.

``iid`` deals a shuffled train split into K parts of equal size (within one example).
``dirichlet`` follows Hsu et al. 2019: for every class, proportions over the K clients are
drawn from Dir(alpha) and that class's examples are split by them, so a small alpha leaves
each client with a few classes. A draw that leaves a client without examples is drawn again
(the usual practice); the draws are a pure function of the seed. A client may hold fewer
examples than a batch: its batches repeat them.

The clients train as one vmapped program, which needs one shape: ``stacked`` pads every
client's index list to the longest, and the counts say how many are real.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.errors import ConfigError

REDRAWS = 100  # Dirichlet draws tried before a too-small client is reported as a config error


@dataclasses.dataclass(frozen=True)
class Partition:
    """Which examples of the train split each client holds."""

    indices: np.ndarray  # (clients, longest) indices into the train split, padded with the client's own
    counts: np.ndarray  # (clients,) real examples per client

    @property
    def clients(self) -> int:
        return len(self.counts)

    def members(self, client: int) -> np.ndarray:
        """Client ``client``'s examples (indices into the train split), without the padding."""
        return self.indices[client, : self.counts[client]]


def check_clients(clients: int, num_examples: int) -> None:
    """Every client needs an example of its own: else one line."""
    if clients > num_examples:
        raise ConfigError(
            f"trainer.federated.clients={clients} exceeds the {num_examples} examples of the train split: "
            f"each client needs one of its own, so use at most {num_examples} clients"
        )


def iid(num_examples: int, clients: int, seed: int) -> Partition:
    """A shuffled split into ``clients`` parts of equal size."""
    check_clients(clients, num_examples)
    order = np.random.default_rng([seed, 1]).permutation(num_examples)
    return stacked(np.array_split(order, clients))


def dirichlet(labels: np.ndarray, clients: int, alpha: float, seed: int) -> Partition:
    """Per-class proportions over clients from Dir(alpha) (Hsu et al. 2019); a draw leaving a
    client empty is drawn again, and one line reports a config where every draw does."""
    labels = np.asarray(labels)
    if not alpha > 0:
        raise ConfigError(f"trainer.federated.alpha must be a positive number, got {alpha!r}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(
            "trainer.federated.partition=dirichlet skews integer class labels (a 'label' field); "
            "this data has none: use trainer.federated.partition=iid"
        )
    check_clients(clients, len(labels))
    rng = np.random.default_rng([seed, 2])
    for _ in range(REDRAWS):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for value in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == value))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(members)).astype(int)[:-1]
            for client, piece in enumerate(np.split(members, cuts)):
                parts[client].append(piece)
        joined = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in joined) > 0:
            return stacked(joined)
    raise ConfigError(
        f"trainer.federated.alpha={alpha} with {clients} clients leaves a client without examples "
        f"in {REDRAWS} draws: raise alpha or use fewer clients"
    )


def stacked(parts: list[np.ndarray]) -> Partition:
    """One (clients, longest) index array, each row padded by repeating its own examples."""
    longest = max(len(p) for p in parts)
    rows = [np.resize(np.asarray(p, np.int32), longest) for p in parts]
    return Partition(np.stack(rows), np.asarray([len(p) for p in parts], np.int32))


def label_histogram(partition: Partition, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(clients, classes) example counts: how skewed the partition is."""
    return np.stack(
        [np.bincount(labels[partition.members(c)], minlength=num_classes) for c in range(partition.clients)]
    )
