"""Train-step time on XLA:CPU for each convolution variant: model implementations and XLA flags.

Each workload's train step (the task's own ``train_step`` in a ``lax.scan`` over batches
gathered on device, as the engine runs it) is compiled once per variant in one process, and
the variants are timed in turn in every round, so a noisy shared machine slows them alike.
A model variant composes the recipe with overrides (``model.conv_impl``, ``model.pool_impl``);
a flag variant passes XLA options to ``compile`` (what ``XLA_FLAGS`` would set for every
program). Each row also prints the first step's loss from the same initial state: the
variants compute the same function.

    python bench/cpu_conv.py                                  # cnn, mlp and vit; 3 rounds of 4 steps
    python bench/cpu_conv.py --workloads cnn --rounds 5 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from research.config import compose_train
from research.experiment import build

YNN = "xla_cpu_experimental_ynn_fusion_type"
DOT, CONV, REDUCE = (
    f"LIBRARY_FUSION_TYPE_{t}" for t in ("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION", "REDUCE")
)
# name: compile options. Compile options take whole lists of enum names (no '+'/'-' edits);
# jaxlib 0.11.2's default list is dot, convolution, reduce (same optimized HLO as no option).
FLAGS = {
    "XLA defaults": {YNN: f"{DOT},{CONV},{REDUCE}"},
    "YNN conv off": {YNN: f"{DOT},{REDUCE}"},
    "YNN all off": {YNN: ""},
}
CNN = "fashion_mnist_cnn"
# What the CNN ran before: lax.conv and reduce_window.
XLA_CONV = ["model.conv_impl=xla", "model.pool_impl=window"]
# workload: [(row name, experiment, overrides, flag name, steps per call)]. Steps per call 0: all
# --steps in one scan (the recipes scan trainer.steps_per_call=16); 1: a scan of length 1 (what
# steps_per_call=1 runs); NO_SCAN: one jitted step per call, no loop (not what the engine runs).
NO_SCAN = -1
WORKLOADS = {
    "cnn": [
        ("CNN lax.conv + reduce_window, scanned", CNN, XLA_CONV, "XLA defaults", 0),
        ("CNN lax.conv + reduce_window, scanned", CNN, XLA_CONV, "YNN conv off", 0),
        ("CNN lax.conv + reduce_window, scanned", CNN, XLA_CONV, "YNN all off", 0),
        ("CNN lax.conv + reduce_window, 1 step/call", CNN, XLA_CONV, "XLA defaults", 1),
        ("CNN lax.conv + reduce_window, 1 step/call", CNN, XLA_CONV, "YNN conv off", 1),
        ("CNN lax.conv + reduce_window, 1 step/call", CNN, XLA_CONV, "YNN all off", 1),
        ("CNN lax.conv + reduce_window, no scan", CNN, XLA_CONV, "XLA defaults", NO_SCAN),
        ("CNN lax.conv + reduce_window, no scan", CNN, XLA_CONV, "YNN all off", NO_SCAN),
        (
            "CNN im2col + reduce_window, scanned",
            CNN,
            ["model.conv_impl=im2col", "model.pool_impl=window"],
            "XLA defaults",
            0,
        ),
        ("CNN im2col + reshape pool (default), scanned", CNN, [], "XLA defaults", 0),
        ("CNN im2col + reshape pool (default), scanned", CNN, [], "YNN conv off", 0),
        ("CNN im2col + reshape pool (default), scanned", CNN, [], "YNN all off", 0),
    ],
    "mlp": [("digits MLP, scanned", "digits_mlp", [], flag, 0) for flag in FLAGS],
    "vit": [
        ("fashion ViT (patch embedding by lax.conv), scanned", "fashion_mnist_vit", [], f, 0) for f in FLAGS
    ],
}
QUIET = ["logger=none", "trainer.progress=false", "trainer.plots=false"]


class Variant:
    """One workload compiled with one set of XLA options: ``run()`` times ``steps`` train steps."""

    def __init__(self, experiment: str, overrides: list[str], options: dict, per_call: int, steps: int):
        built = build(compose_train([f"+experiment={experiment}", *QUIET, *overrides]))
        task, split = built.task, built.dataset.splits["train"]
        self.data = jax.device_put(split.arrays())
        batch = built.dataset.batch_size
        scanned = per_call != NO_SCAN
        per_call = per_call if scanned else 1
        self.calls = steps // per_call
        rows = np.arange(steps * batch, dtype=np.int32).reshape(self.calls, per_call, batch)
        self.xs = [jax.device_put((r if scanned else r[0]) % split.num_examples) for r in rows]

        def chunk(state, data, xs):
            def one(state, x):
                return task.train_step(state, jax.tree.map(lambda a: a[x], data))

            if scanned:
                return jax.lax.scan(one, state, xs)
            state, metrics = one(state, xs)
            return state, jax.tree.map(lambda m: m[None], metrics)  # stacked like a scan's

        self.state = jax.jit(task.init)(jax.random.PRNGKey(0), jax.tree.map(lambda a: a[:batch], self.data))
        self.call = jax.jit(chunk).lower(self.state, self.data, self.xs[0]).compile(options)
        _, metrics = self.call(self.state, self.data, self.xs[0])  # warm-up; first-step loss from the init
        self.first_loss = float(metrics["loss"][0])

    def run(self) -> float:
        """Seconds for ``steps`` steps from the same initial state (fetching the loss waits for them)."""
        start = time.perf_counter()
        for xs in self.xs:
            _, metrics = self.call(self.state, self.data, xs)
        float(metrics["loss"][-1])
        return time.perf_counter() - start


def time_variants(variants: dict[str, Variant], rounds: int, steps: int) -> dict[str, dict]:
    """Steps/s (median over rounds) of each variant, timed in turn within every round."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            seconds[name].append(variant.run())
    return {
        name: {"steps_per_s": round(steps / float(np.median(s)), 2), "first_loss": variants[name].first_loss}
        for name, s in seconds.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per timing, and per call when scanned")
    parser.add_argument("--flags", nargs="+", default=list(FLAGS), choices=list(FLAGS))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"# {platform.node()} | {platform.processor() or platform.machine()} x{os.cpu_count()} | "
        f"jax {jax.__version__} | load {load:.1f} | XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    results = {}
    for workload in args.workloads:
        variants = {
            f"{row} | {flag}": Variant(exp, overrides, FLAGS[flag], per_call or args.steps, args.steps)
            for row, exp, overrides, flag, per_call in WORKLOADS[workload]
            if flag in args.flags
        }
        results[workload] = time_variants(variants, args.rounds, args.steps)
        for name, r in results[workload].items():
            print(f"{name:90s} {r['steps_per_s']:9.2f} steps/s  first loss {r['first_loss']:.6f}", flush=True)
    print(f"# load at end {os.getloadavg()[0]:.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
