"""Step time with the weight average (optimizer.ema) and the health signals (trainer.health) on and off.

Each variant is the recipe's task built as ``research.train`` builds it, stepped by the engine's
own compiled program (``engine.steps.Programs``: K steps per dispatch in a ``lax.scan``, the
state donated), on the recipe's data on device. The variants' calls alternate, one call each in
turn, so a noisy machine slows them alike; the figure is the median time per step and its ratio
to the plain task (health off, no average). Compile time is excluded.

    python bench/ema_health_cost.py                       # the recipes below
    python bench/ema_health_cost.py --calls 200 --recipes digits_mlp
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

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
VARIANTS = {  # name: overrides (the health signals at the default log interval, trainer.log_every=32)
    "plain": ["trainer.health=false"],
    "health": ["trainer.health=true"],
    "ema": ["trainer.health=false", "{average}"],
    "health+ema": ["trainer.health=true", "{average}"],
}


def program(recipe: str, variant: list[str], per_call: int) -> tuple:
    """(the compiled K-step program, its state, data and step indices) for one variant."""
    overrides = [o.format(average=AVERAGE[recipe]) for o in variant]
    cfg = compose_train([f"+experiment={recipe}", "logger=none", "trainer.log_every=32", *overrides])
    built = build(cfg)
    mesh, replicas = make_mesh({}), Replicas()
    feed = make_feed(built.dataset, 0, 1, mesh)
    example = feed.example()
    abstract = replicas.abstract_state(built.task.init, 0, example)
    programs = Programs(built.task, feed.gather, replicas, True, state_shardings(mesh, abstract))
    state = programs.init(jax.random.PRNGKey(0), example)
    xs = feed.xs(0, per_call)
    state, _ = programs.train(state, feed.data, xs)  # compiled and warm
    jax.block_until_ready(state)
    return programs, state, feed.data, xs


def measure(recipe: str, calls: int, per_call: int) -> dict:
    built = {name: list(program(recipe, v, per_call)) for name, v in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(calls):
        for name, entry in built.items():
            programs, state, data, xs = entry
            start = time.perf_counter()
            state, metrics = programs.train(state, data, xs)
            jax.block_until_ready((state, metrics))
            times[name].append((time.perf_counter() - start) / per_call)
            entry[1] = state
    plain = float(np.median(times["plain"]))
    return {
        name: {"ms_per_step": 1e3 * float(np.median(t)), "vs_plain": float(np.median(t)) / plain}
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=150, help="timed calls per variant")
    parser.add_argument("--per-call", type=int, default=32, help="steps per call (one log interval)")
    parser.add_argument("--recipes", nargs="+", default=list(AVERAGE))
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    results = {}
    for recipe in args.recipes:
        results[recipe] = measure(recipe, args.calls, args.per_call)
        print(recipe, json.dumps(results[recipe]), flush=True)  # as each finishes
    print(f"{platform.machine()}, jax {jax.__version__}, {jax.devices()[0].platform}")
    print(f"median of {args.calls} calls of {args.per_call} steps per variant, calls interleaved")
    print("| recipe | variant | ms/step | vs plain |")
    print("|---|---|---|---|")
    for recipe, variants in results.items():
        for name, r in variants.items():
            print(f"| {recipe} | {name} | {r['ms_per_step']:.3f} | {r['vs_plain']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
