"""Step time with the weight average (optimizer.ema) and the health signals (trainer.health) on and off.

Each variant is the recipe's task built as ``research.train`` builds it, stepped by the engine's
own compiled program (``engine.steps.Programs``: K steps per dispatch in a ``lax.scan``, the
state donated), on the recipe's data on device, as the loop calls it: at the defaults
(``trainer.steps_per_call=16``, ``trainer.log_every=32``) the last step of each call measures the
health signals, and every other call is logged. One timed sample is one log interval (the calls
that make it up). The variants' samples alternate, one each in turn, so a noisy machine slows
them alike; the figures are the median time per step and the median, over the rounds, of its
ratio to the plain task's (health off, no average) in the same round. Compile time is
excluded. ``--seeds 3``: three seeds in one vmapped program.

    python bench/ema_health_cost.py                       # the recipes below, one seed
    python bench/ema_health_cost.py --seeds 3 --recipes digits_mlp digits_vae
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from research import watch
from research.config import compose_train
from research.engine.feed import make_feed
from research.engine.replicas import Replicas
from research.engine.sharding import make_mesh, state_shardings
from research.engine.steps import Programs
from research.experiment import build

# recipe: the override that turns its average on (a GAN averages its generator)
AVERAGE = {
    "digits_mlp": "optimizer.ema.decay=0.999",
    "digits_cnn": "optimizer.ema.decay=0.999",
    "digits_vae": "optimizer.ema.decay=0.999",
    "digits_dcgan": "task.optimizers.generator.ema.decay=0.999",
}
VARIANTS = {  # name: overrides
    "plain": ["trainer.health=false"],
    "health": ["trainer.health=true"],
    "norms only": ["trainer.health=true"],  # the health signals without the per-step non-finite check
    "ema": ["trainer.health=false", "{average}"],
    "health+ema": ["trainer.health=true", "{average}"],
}


@contextlib.contextmanager
def without_check(name: str) -> Iterator[None]:
    """For the "norms only" variant, while its program is traced: every gradient reads as finite,
    so what the per-step non-finite check costs is the difference from "health"."""
    if name != "norms only":
        yield
        return
    with mock.patch.object(watch, "group_finite", lambda tree, names: {n: jnp.ones((), bool) for n in names}):
        yield


def program(recipe: str, variant: list[str], per_call: int, log_every: int, seeds: int) -> list:
    """[the compiled K-step program, its state, data, step indices, calls per log] for one variant."""
    overrides = [o.format(average=AVERAGE[recipe]) for o in variant]
    logging = ["logger=none", f"trainer.log_every={log_every}"]
    cfg = compose_train([f"+experiment={recipe}", *logging, *overrides])
    built = build(cfg)
    mesh, replicas = make_mesh({}), Replicas(num_seeds=seeds)
    feed = make_feed(built.dataset, 0, seeds, mesh)
    example = feed.example()
    abstract = replicas.abstract_state(built.task.init, 0, example)
    shardings = state_shardings(mesh, abstract, leading_axes=int(replicas.vmapped))
    programs = Programs(built.task, feed.gather, replicas, True, shardings)
    state = programs.init(replicas.rngs(0), example)
    xs = feed.xs(0, per_call)
    state, _ = programs.train(state, feed.data, xs)  # compiled and warm
    jax.block_until_ready(state)
    return [programs, state, feed.data, xs, max(log_every // per_call, 1)]


def measure(recipe: str, samples: int, per_call: int, log_every: int, seeds: int) -> dict:
    built = {}
    for name, v in VARIANTS.items():
        with without_check(name):
            built[name] = program(recipe, v, per_call, log_every, seeds)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(samples):
        for name, entry in built.items():
            programs, state, data, xs, calls = entry
            start = time.perf_counter()
            for _ in range(calls):
                state, metrics = programs.train(state, data, xs)
            jax.block_until_ready((state, metrics))
            times[name].append((time.perf_counter() - start) / (per_call * calls))
            entry[1] = state
    plain = np.asarray(times["plain"])
    return {  # the ratio within each round: a load that drifts between rounds cancels out
        name: {"ms_per_step": 1e3 * float(np.median(t)), "vs_plain": float(np.median(np.asarray(t) / plain))}
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="timed log intervals per variant")
    parser.add_argument("--per-call", type=int, default=16, help="steps per call (trainer.steps_per_call)")
    parser.add_argument("--log-every", type=int, default=32, help="trainer.log_every")
    parser.add_argument("--seeds", type=int, default=1, help="replicas in one vmapped program")
    parser.add_argument("--recipes", nargs="+", default=list(AVERAGE))
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    results = {}
    for recipe in args.recipes:
        results[recipe] = measure(recipe, args.samples, args.per_call, args.log_every, args.seeds)
        print(recipe, json.dumps(results[recipe]), flush=True)  # as each finishes
    print(f"{platform.machine()}, jax {jax.__version__}, {jax.devices()[0].platform}, {args.seeds} seed(s)")
    print(
        f"median of {args.samples} log intervals ({args.log_every} steps, {args.per_call} per call) "
        "per variant, interleaved"
    )
    print("| recipe | variant | ms/step | vs plain |")
    print("|---|---|---|---|")
    for recipe, variants in results.items():
        for name, r in variants.items():
            print(f"| {recipe} | {name} | {r['ms_per_step']:.3f} | {r['vs_plain']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
