"""Federated training figures (issue 32): a round in one program against ten clients one after
another, and what FedAvg, FedProx, FedAvgM and FedAdam reach on Fashion-MNIST, IID and Dirichlet-skewed.

``speed``: one round of the recipe's K = 10 clients (``fashion_mnist_fedavg``) as the one
compiled program the engine runs, against the same ten clients trained one after the other
in the same process, from the same state: (a) each client's local steps as its own compiled
scan (the same code, not vmapped), then the same aggregation; (b) each local step its own
dispatch, batches gathered on the host (the usual hand-written simulation loop). Compiled
before timing; the median round of ``--rounds``, in wall seconds and in CPU seconds of the
process (all threads: the work done, which a shared machine's load inflates less).

``quality``: whole runs through ``research.experiment.run``: centralised training on as many
examples as the federated runs see (rounds x 10 clients x local steps x batch), FedAvg IID,
and on a Dirichlet alpha = 0.1 partition FedAvg, FedProx, FedAvgM and FedAdam, for each seed (seed 0 of
every setting first, so a cut run still has every setting; ``--extra`` overrides are added to
each setting and to its name, for a sweep). One JSON line per run in ``--out``;
``--table`` prints the Markdown table from it.

    python bench/federated.py speed --rounds 3
    python bench/federated.py speed --rounds 5 --experiment +experiment=digits_mlp   # a small model
    python bench/federated.py quality --rounds 15 --local-steps 10 --seeds 0 1 2 --out fed.jsonl
    python bench/federated.py table --out fed.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from research.config import compose_train
from research.experiment import build, run

RECIPE = "+experiment=fashion_mnist_fedavg"
QUIET = ["logger=none", "trainer.progress=false", "trainer.plots=false", "trainer.checkpoint.enabled=false"]
SKEW = ["trainer.federated.partition=dirichlet", "trainer.federated.alpha=0.1"]
PROX = ["trainer.federated.algorithm=fedprox", "trainer.federated.mu=1.0"]
PLAIN = ["trainer.federated.server_momentum=null"]  # FedAvg: the server adds the averaged delta
SETTINGS = {
    "centralised": ["trainer.federated.clients=null"],
    "fedavgm_iid": [],  # the recipe: server momentum 0.5 (FedAvgM)
    "fedavg_iid": PLAIN,
    "fedavg_dirichlet_0.1": [*SKEW, *PLAIN],
    "fedavgm_dirichlet_0.1": SKEW,
    "fedavgm_lr0.5_dirichlet_0.1": [*SKEW, "trainer.federated.server_lr=0.5"],
    "fedprox_dirichlet_0.1": [*SKEW, *PLAIN, *PROX],
    "fedadam_dirichlet_0.1": [
        *SKEW,
        *PLAIN,
        "trainer.federated.server_optimizer=adam",
        "trainer.federated.server_lr=0.01",
    ],
}


def _ready(tree):
    return jax.block_until_ready(tree)


def speed(rounds: int, local_steps: int, experiment: str) -> dict:
    clients = [] if experiment == RECIPE else ["trainer.federated.clients=10"]  # the recipe's K
    cfg = compose_train([experiment, *QUIET, *clients, f"trainer.federated.local_steps={local_steps}"])
    fed = build(cfg).task
    arrays = fed.dataset.splits["train"].arrays()
    data = jax.device_put(arrays)
    example = {k: v[: fed.batch_size] for k, v in arrays.items()}
    start = jax.jit(fed.init)(jax.random.PRNGKey(0), example)

    one_program = jax.jit(fed.train_step)

    local = jax.jit(fed._local)  # one client's local steps: the same code as the round, not vmapped
    aggregate = jax.jit(fed._aggregate)
    task_step = jax.jit(fed.task.train_step)

    def clients_of(state):
        keys = jax.random.split(jax.random.split(state["federated"]["sampler"], 3)[2], fed.clients)
        clients = fed._broadcast(state, state["federated"]["clients"])
        return clients, keys

    def sequential_scan(state):
        clients, keys = clients_of(state)
        fs = state["federated"]
        done = []
        for c in range(fed.clients):
            one = jax.tree.map(lambda a, c=c: a[c], clients)
            done.append(local(one, fs["partition"][c], fs["counts"][c], keys[c], data)[0])
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *done)
        weights = fs["counts"] / jnp.sum(fs["counts"])
        return aggregate(state, stacked, weights.astype(jnp.float32))

    def sequential_steps(state):
        clients, _ = clients_of(state)
        fs = jax.device_get(state["federated"])
        rng = np.random.default_rng(0)
        done = []
        for c in range(fed.clients):
            one = jax.tree.map(lambda a, c=c: a[c], clients)
            own = fs["partition"][c, : fs["counts"][c]]
            order = rng.permutation(own)
            for step in range(fed.local_steps):
                rows = order[(step * fed.batch_size + np.arange(fed.batch_size)) % len(order)]
                one, _ = task_step(one, {k: v[rows] for k, v in arrays.items()})
            done.append(one)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *done)
        weights = fs["counts"] / np.sum(fs["counts"])
        return aggregate(state, stacked, jnp.asarray(weights, jnp.float32))

    def timed(fn) -> tuple[float, float]:
        """Median wall and CPU seconds (every thread of the process) of a round."""
        _ready(fn(start))  # compile
        wall, cpu = [], []
        for _ in range(rounds):
            t, c = time.perf_counter(), time.process_time()
            _ready(fn(start))
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return statistics.median(wall), statistics.median(cpu)

    (one, one_cpu), (scan, scan_cpu), (steps, steps_cpu) = (
        timed(lambda s: one_program(s, data)),
        timed(sequential_scan),
        timed(sequential_steps),
    )
    return {
        "experiment": experiment,
        "clients": fed.clients,
        "local_steps": fed.local_steps,
        "batch": fed.batch_size,
        "one_program_s": one,
        "sequential_scan_s": scan,
        "sequential_steps_s": steps,
        "speedup_vs_scan": scan / one,
        "speedup_vs_steps": steps / one,
        "cpu_s": {"one_program": one_cpu, "sequential_scan": scan_cpu, "sequential_steps": steps_cpu},
    }


def quality(
    rounds: int, local_steps: int, seeds: list[int], out: Path, only: list[str], extra: list[str]
) -> None:
    examples_steps = rounds * 10 * local_steps  # centralised steps of the same batch
    for seed in seeds:
        for name, overrides in SETTINGS.items():
            if only and name not in only:
                continue
            overrides = [*overrides, *extra]
            length = (
                [f"trainer.max_steps={examples_steps}", f"trainer.eval_every={examples_steps}"]
                if name == "centralised"
                else [
                    f"trainer.federated.rounds={rounds}",
                    f"trainer.federated.local_steps={local_steps}",
                    f"trainer.eval_every={rounds}",
                    f"trainer.log_every={rounds}",
                ]
            )
            cfg = compose_train([RECIPE, *QUIET, f"seed={seed}", *length, *overrides])
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                summary = run(cfg, Path(tmp))
                wall = time.perf_counter() - t
            row = {
                "setting": " ".join([name, *extra]),
                "seed": seed,
                "rounds": rounds,
                "local_steps": local_steps,
                "test_accuracy": summary["test/accuracy"],
                "clients_accuracy": summary.get("clients/accuracy"),
                "clients_accuracy_std": summary.get("clients/accuracy_std"),
                "wall_s": wall,
            }
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


def table(out: Path) -> str:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    lines = [
        "| setting | seeds | test accuracy, mean +- std | per seed | clients' accuracy (fairness std) "
        "| wall s per run |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["setting"] for r in rows):  # in the order first run
        mine = [r for r in rows if r["setting"] == name]
        acc = np.asarray([r["test_accuracy"] for r in mine])
        spread = f" +- {acc.std(ddof=1):.3f}" if len(acc) > 1 else ""
        fair = "-"
        if mine[0]["clients_accuracy"] is not None:
            fair = "{:.3f} ({:.3f})".format(
                np.mean([r["clients_accuracy"] for r in mine]),
                np.mean([r["clients_accuracy_std"] for r in mine]),
            )
        per_seed = ", ".join(f"{a:.3f}" for a in acc)
        wall = np.mean([r["wall_s"] for r in mine])
        lines.append(
            f"| {name} | {len(mine)} | {acc.mean():.3f}{spread} | {per_seed} | {fair} | {wall:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["speed", "quality", "table"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=[], help="settings to run (default: all)")
    parser.add_argument("--extra", nargs="*", default=[], help="quality: overrides added to each setting")
    parser.add_argument("--out", type=Path, default=Path("federated_bench.jsonl"))
    parser.add_argument("--experiment", default=RECIPE, help="speed: the recipe (10 clients)")
    args = parser.parse_args()
    if args.part == "speed":
        print(json.dumps(speed(args.rounds, args.local_steps, args.experiment), indent=1))
    elif args.part == "quality":
        quality(args.rounds, args.local_steps, args.seeds, args.out, args.only, args.extra)
        print(table(args.out))
    else:
        print(table(args.out))


if __name__ == "__main__":
    main()
