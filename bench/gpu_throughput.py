"""Train-step throughput and model FLOPs utilisation (MFU) of the MLP and CNN, and seeds in one program.

Runs unchanged on a GPU, a TPU or the CPU and prints markdown tables. Each case is
the framework's own compiled train chunk (``research.engine.steps.Programs``: K
scanned steps per dispatch, metrics fetched once per call) on the
composed digits config with the case's overrides; compile time is excluded.

- FLOPs per step: XLA's cost analysis of one compiled train step (forward,
  backward and optimizer update; a multiply-add counts 2).
- MFU: achieved FLOP/s over the device's peak dense matmul FLOP/s for the case's
  compute dtype: the vendor figure for known accelerators (float32 matmuls on
  NVIDIA GPUs run as TF32, JAX's default precision there), else the best of a few
  large matmuls measured here (labelled "measured").
- Seeds: K seeds as one vmapped program against the same model one seed at a time
  (K sequential runs step at the single-seed rate), in replica-steps per second.

    python bench/gpu_throughput.py                   # every case; minutes on a GPU
    python bench/gpu_throughput.py --batches 32 --seconds 2   # a 2-core CPU: ~4 min (batch 1024 takes ~15)
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from research.config import compose_train
from research.engine.feed import MemoryFeed
from research.engine.replicas import Replicas
from research.engine.sharding import make_mesh, state_shardings
from research.engine.steps import Programs
from research.experiment import build

CASES = {  # name: overrides of the digits config (batch sizes are added per run)
    "MLP 64-512-256-10 (digits_mlp)": ["+experiment=digits_mlp"],
    "CNN 16-32 conv, 64 dense (digits_cnn)": ["+experiment=digits_cnn"],
    "MLP 64-4096-4096-10 (wide)": ["+experiment=digits_mlp", "model.hidden_sizes=[4096,4096]"],
}
# Dense peak FLOP/s by device kind (vendor data sheets, without sparsity): {dtype: flop/s}.
PEAKS = {
    "H100 PCIe": {"float32": 378e12, "bfloat16": 756e12},
    "H100": {"float32": 494.7e12, "bfloat16": 989.4e12},  # SXM; float32 as TF32
    "H200": {"float32": 494.7e12, "bfloat16": 989.4e12},
    "A100": {"float32": 156e12, "bfloat16": 312e12},
    "TPU v4": {"float32": 275e12, "bfloat16": 275e12},
    "TPU v5 lite": {"float32": 197e12, "bfloat16": 197e12},
    "TPU v5p": {"float32": 459e12, "bfloat16": 459e12},
}
MATMUL_SIZE = 4096  # square matmul used to measure the peak of an unknown device, best of MATMUL_REPEATS
MATMUL_REPEATS = 10


@functools.cache
def peak_flops(dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from) for the first device and ``dtype``."""
    kind = jax.devices()[0].device_kind
    for name, peaks in PEAKS.items():  # most specific names first
        if name in kind:
            return peaks[dtype], "data sheet"
    a = jnp.ones((MATMUL_SIZE, MATMUL_SIZE), dtype)
    matmul = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    matmul(a).block_until_ready()
    best = min(_timed(lambda: matmul(a).block_until_ready()) for _ in range(MATMUL_REPEATS))
    return 2 * MATMUL_SIZE**3 / best, "measured"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def setup(overrides: list[str], batch: int, precision: str, seeds: int):
    """Task, feed and compiled programs for one case, on every device (data parallel)."""
    cfg = compose_train(
        [
            *overrides,
            f"data.batch_size={batch}",
            f"precision={precision}",
            "logger=none",
            "optimizer/schedule=constant",
        ]
    )
    built = build(cfg)
    task, dataset = built.task, built.dataset
    mesh = make_mesh({"data": -1})
    replicas = Replicas(num_seeds=seeds)
    feed = MemoryFeed(dataset.splits["train"], batch, 0, seeds, mesh)
    rngs = replicas.rngs(0)
    abstract = jax.eval_shape(task.init, rngs[0] if replicas.vmapped else rngs, feed.example())
    if replicas.vmapped:
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((seeds, *a.shape), a.dtype), abstract)
    shardings = state_shardings(mesh, abstract, leading_axes=int(replicas.vmapped))
    programs = Programs(task, feed.gather, replicas, per_seed_data=True, state_sharding=shardings)
    return task, feed, programs, programs.init(rngs, feed.example())


def step_flops(task, feed) -> float:
    """XLA's FLOP count of one train step at this batch size."""
    state = task.init(jax.random.PRNGKey(0), feed.example())
    compiled = jax.jit(task.train_step).lower(state, feed.example()).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def steps_per_s(feed, programs, state, seconds: float, per_call: int) -> float:
    """Train steps per second, calls of ``per_call`` steps for about ``seconds`` (after a compiling call)."""
    state, metrics = programs.train(state, feed.data, feed.xs(0, per_call))
    jax.device_get(metrics)
    step, start = per_call, time.perf_counter()
    while step == per_call or time.perf_counter() - start < seconds:
        state, metrics = programs.train(state, feed.data, feed.xs(step, per_call))
        jax.device_get(metrics)  # one host sync per call (the loop reads at boundaries on one device)
        step += per_call
    return (step - per_call) / (time.perf_counter() - start)


def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per case (whole calls)")
    parser.add_argument("--per-call", type=int, default=16, help="trainer.steps_per_call")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 1024])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} x{jax.device_count()} ({device.platform}), jax {jax.__version__}\n")

    columns = ["steps/s", "examples/s", "MFLOP/step", "achieved TFLOP/s", "peak TFLOP/s", "MFU"]
    row("model", "batch", "precision", *columns)
    row(*["---"] * 9)
    single_rates = {}
    for name, overrides in CASES.items():
        for batch in args.batches:
            for precision in args.precisions:
                task, feed, programs, state = setup(overrides, batch, precision, seeds=1)
                steps = steps_per_s(feed, programs, state, args.seconds, args.per_call)
                flops = step_flops(task, feed)
                peak, source = peak_flops(precision)
                single_rates[name, batch, precision] = steps
                achieved = steps * flops
                row(
                    name,
                    batch,
                    precision,
                    rate(steps),
                    rate(steps * batch),
                    f"{flops / 1e6:,.1f}",
                    f"{achieved / 1e12:.3f}",
                    f"{peak / 1e12:,.3g} ({source})",
                    f"{achieved / peak:.2%}",
                )

    print()
    row(
        "model",
        "batch",
        "precision",
        "1 seed: steps/s",
        f"{args.seeds} seeds in one program: replica-steps/s",
        "speed-up over sequential",
    )
    row(*["---"] * 6)
    precision = args.precisions[0]
    for name, overrides in CASES.items():
        for batch in args.batches:
            _, feed, programs, state = setup(overrides, batch, precision, seeds=args.seeds)
            together = args.seeds * steps_per_s(feed, programs, state, args.seconds, args.per_call)
            single = single_rates[name, batch, precision]
            row(name, batch, precision, rate(single), rate(together), f"**{together / single:.1f}x**")


if __name__ == "__main__":
    main()
