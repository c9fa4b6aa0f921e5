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

What an average costs by itself is shown by the hand-written pure-JAX equivalent in the same
process (``--reference``): ``digits_mlp``'s MLP and Adam in a ``lax.scan`` of the same K steps, with
and without an average written out as ``e + rate * (p - e)``: the framework's EMA ratio is to be
read against it (the same reads and writes of every weight, per step).

    python bench/ema_health_cost.py                       # the recipes below, one seed
    python bench/ema_health_cost.py --seeds 3 --recipes digits_mlp digits_vae
    python bench/ema_health_cost.py --reference --variants plain ema --recipes digits_mlp
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
import optax

from research import watch
from research.config import compose_train
from research.engine.feed import make_feed
from research.engine.replicas import Replicas
from research.engine.sharding import make_mesh, state_shardings
from research.engine.steps import Programs
from research.experiment import build

# recipe: the settings of its average (a GAN averages its generator)
AVERAGE = {
    "digits_mlp": "optimizer.ema",
    "digits_cnn": "optimizer.ema",
    "digits_vae": "optimizer.ema",
    "digits_dcgan": "task.optimizers.generator.ema",
    "fashion_mnist_cnn": "optimizer.ema",
}
VARIANTS = {  # name: overrides
    "plain": ["trainer.health=false"],
    "health": ["trainer.health=true"],
    "norms only": ["trainer.health=true"],  # the health signals without the per-step non-finite check
    "ema": ["trainer.health=false", "{average}.decay=0.999"],
    "ema per call": ["trainer.health=false", "{average}.decay=0.999", "{average}.every=call"],
    "health+ema": ["trainer.health=true", "{average}.decay=0.999"],
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


def measure(recipe: str, samples: int, per_call: int, log_every: int, seeds: int, variants: list) -> dict:
    built = {}
    for name in variants:
        with without_check(name):
            built[name] = program(recipe, VARIANTS[name], per_call, log_every, seeds)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(samples):
        for name, entry in built.items():
            programs, state, data, xs, calls = entry
            start = time.perf_counter()
            for _ in range(calls):
                state, metrics = programs.train(state, data, xs)
            jax.block_until_ready((state, metrics))
            times[name].append((time.perf_counter() - start) / (per_call * calls))
            entry[1] = state
    return ratios(times)


def ratios(times: dict[str, list[float]]) -> dict:
    """Median ms per step and the median of each round's ratio to "plain" (drifting load cancels)."""
    plain = np.asarray(times["plain"])
    return {
        name: {"ms_per_step": 1e3 * float(np.median(t)), "vs_plain": float(np.median(np.asarray(t) / plain))}
        for name, t in times.items()
    }


def reference(samples: int, per_call: int, seeds: int, decay: float = 0.999) -> dict:
    """The hand-written equivalent: digits_mlp's MLP (64-512-256-10, batch 32) and Adam, K steps
    in a scan, the state donated, with (``ema``) and without (``plain``) a debiased average."""
    sizes, batch, classes = (64, 512, 256, 10), 32, 10
    keys = jax.random.split(jax.random.key(0), 4)
    shapes = zip(keys, sizes, sizes[1:], strict=False)
    params = [(jax.random.normal(k, (a, b)) * a**-0.5, jnp.zeros(b)) for k, a, b in shapes]
    x = jax.random.normal(keys[-1], (per_call, batch, sizes[0]))
    y = jax.random.randint(keys[-1], (per_call, batch), 0, classes)
    tx = optax.adam(1e-3)

    def loss(p: list, xb: jax.Array, yb: jax.Array) -> jax.Array:
        for i, (w, b) in enumerate(p):
            xb = xb @ w + b if i == len(p) - 1 else jax.nn.relu(xb @ w + b)
        return optax.softmax_cross_entropy_with_integer_labels(xb, yb).mean()

    def make(average: bool) -> object:
        def step(carry: tuple, batch: tuple) -> tuple:
            p, o, e, count = carry
            u, o = tx.update(jax.grad(loss)(p, *batch), o, p)
            if average:
                count = count + 1
                rate = (1.0 - decay) / (1.0 - decay ** count.astype(jnp.float32))
                e = jax.tree.map(lambda e, p: e + rate * (p - e), e, p)
            return (optax.apply_updates(p, u), o, e, count), None

        def calls(carry: tuple) -> tuple:
            return jax.lax.scan(step, carry, (x, y))[0]

        return jax.jit(jax.vmap(calls) if seeds > 1 else calls, donate_argnums=0)

    def fresh() -> tuple:
        one = (params, tx.init(params), params, jnp.zeros((), jnp.int32))
        return jax.tree.map(lambda a: jnp.stack([a] * seeds) if seeds > 1 else jnp.array(a), one)

    built = {"plain": [make(False), fresh()], "ema": [make(True), fresh()]}
    for entry in built.values():
        entry[1] = jax.block_until_ready(entry[0](entry[1]))
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(samples):
        for name, entry in built.items():
            start = time.perf_counter()
            entry[1] = jax.block_until_ready(entry[0](entry[1]))
            times[name].append((time.perf_counter() - start) / per_call)
    return ratios(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="timed log intervals per variant")
    parser.add_argument("--per-call", type=int, default=16, help="steps per call (trainer.steps_per_call)")
    parser.add_argument("--log-every", type=int, default=32, help="trainer.log_every")
    parser.add_argument("--seeds", type=int, default=1, help="replicas in one vmapped program")
    parser.add_argument("--recipes", nargs="+", default=list(AVERAGE))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--reference", action="store_true", help="also the hand-written MLP, EMA on and off")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if "plain" not in args.variants:
        parser.error("--variants must include plain: the ratios are to it")
    results = {}
    if args.reference:
        results["hand-written MLP + Adam"] = reference(args.samples, args.per_call, args.seeds)
        print("reference", json.dumps(results["hand-written MLP + Adam"]), flush=True)
    for recipe in args.recipes:
        args_ = (args.samples, args.per_call, args.log_every, args.seeds, args.variants)
        results[recipe] = measure(recipe, *args_)
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
