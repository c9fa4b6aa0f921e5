"""The dry run's estimate of peak memory per device against a real run's measured peak, on the CPU.

For each case: ``python -m research.train <case> trainer.dry_run=true`` prints the estimate (and
fills the persistent compilation cache); then the same config trains for real in a fresh process.
What is measured there is the device memory the run used, as an accelerator's allocator would
report it (``peak_bytes_in_use``). On a CPU device buffers are host memory, but the process holds
much besides (the runtime, the compiler and the programs it loads, Python objects: ~100-300 MB
that grow with the model's program, not with its buffers), so the raw resident memory says little
about a small run. The measure therefore starts where the run's programs are compiled and its
state made, at the top of the training loop (``Loop.train``): there the process's non-device
memory is its resident memory (``/proc/self/statm``) less the bytes of every live JAX array
(``jax.live_arrays``: state, data, batches). From there to the end of the final evaluation the
resident memory is sampled every ``SAMPLE_S``; measured = its peak less that non-device part. The
child runs with glibc's mmap threshold fixed at 64 kB (``MALLOC_MMAP_THRESHOLD_``), so that every
buffer XLA frees goes back to the system and the resident memory follows the buffers in use
(glibc's default raises the threshold as buffers are freed and then keeps freed memory mapped).

Checkpoints and plots are off (an async save's host copy of the state is not device memory on an
accelerator, and the plan does not count it), and ``trainer.peak_tflops`` is set: without it a
CPU run measures its matmul peak (four 1024x1024 matrices) for ``train/mfu``, which no accelerator
run does.

    python bench/plan_vs_measured.py               # every case, ~10 min on a quiet 2-core CPU
    python bench/plan_vs_measured.py --case digits_cnn_512
    python bench/plan_vs_measured.py --conv        # XLA:CPU convolutions' memory beyond memory_analysis
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = [
    "logger=none",
    "trainer.progress=false",
    "trainer.plots=false",
    "trainer.checkpoint.enabled=false",
    "optimizer/schedule=constant",
    "trainer.peak_tflops=1",
]
SHORT = ["trainer.max_steps=16", "trainer.eval_every=8"]  # two train calls, a validation between
CASES = {  # name: (what it is, overrides)
    "default": ("digits_mlp (the default experiment)", ["+experiment=digits_mlp", *SHORT]),
    "mlp_4096": (
        "digits_mlp 64-4096-4096-4096-10",
        ["+experiment=digits_mlp", "model.hidden_sizes=[4096,4096,4096]", *SHORT],
    ),
    "mlp_2048_batch_1024": (
        "digits_mlp 64-2048-2048-10, batch 1024",
        ["+experiment=digits_mlp", "model.hidden_sizes=[2048,2048]", "data.batch_size=1024", *SHORT],
    ),
    "digits_cnn_512": ("digits_cnn, batch 512", ["+experiment=digits_cnn", "data.batch_size=512", *SHORT]),
    "digits_cnn_512_xla": (
        "digits_cnn, batch 512, `model.conv_impl=xla` (lax.conv)",
        ["+experiment=digits_cnn", "data.batch_size=512", "model.conv_impl=xla", *SHORT],
    ),
    "fashion_cnn": ("fashion_mnist_cnn", ["+experiment=fashion_mnist_cnn", *SHORT]),
    "fashion_cnn_1024": (
        "fashion_mnist_cnn, batch 1024",
        ["+experiment=fashion_mnist_cnn", "data.batch_size=1024", *SHORT],
    ),
    "char_lm": ("shakespeare_char_transformer", ["+experiment=shakespeare_char_transformer", *SHORT]),
    "char_lm_64": (
        "shakespeare_char_transformer, batch 64",
        ["+experiment=shakespeare_char_transformer", "data.batch_size=64", *SHORT],
    ),
    "vit": ("fashion_mnist_vit", ["+experiment=fashion_mnist_vit", *SHORT]),
    "vit_1024": (
        "fashion_mnist_vit, batch 1024",
        ["+experiment=fashion_mnist_vit", "data.batch_size=1024", *SHORT],
    ),
}
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
SAMPLE_S = 0.002
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure(overrides: list[str]) -> dict:
    """Train ``overrides`` twice in this process; each run's peak device memory in its training
    loop (the module's docstring says how). The second run's process is warm: its thread pools,
    allocator arenas and first-execution set-up exist already."""
    import gc

    import jax

    from research import experiment
    from research.config import compose_train
    from research.engine import loop

    cfg = compose_train(overrides)
    experiment.prepare(cfg)
    runs: list[dict] = []
    train = loop.Loop.train

    def measured_train(self: loop.Loop, state: object) -> object:
        self.run.programs.compiled_programs()  # the compiles under way in their thread: done
        jax.block_until_ready(state)
        gc.collect()
        live = sum(a.nbytes for a in jax.live_arrays())
        at = {"live": live, "other": rss() - live, "peak": 0}  # other: not a device buffer
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                at["peak"] = max(at["peak"], rss())
                time.sleep(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            return jax.block_until_ready(train(self, state))
        finally:
            done.set()
            sampler.join()
            runs.append({"measured": at["peak"] - at["other"], "live_at_start": live, "other": at["other"]})

    loop.Loop.train = measured_train
    for _ in range(2):
        with tempfile.TemporaryDirectory() as run_dir:
            experiment.run(cfg, Path(run_dir))
        gc.collect()
    return {"first": runs[0], "warm": runs[1]}


def conv_scratch() -> str:
    """One convolution's gradient at the CNN's sizes: XLA's reported temporaries against the RSS its
    calls add (measured after a first call, so only what each call allocates and frees counts).
    """
    import jax
    import jax.numpy as jnp

    x, k = jnp.ones((512, 8, 8, 16)), jnp.ones((3, 3, 16, 32))
    dims = ("NHWC", "HWIO", "NHWC")

    def grad(k: jax.Array, x: jax.Array) -> jax.Array:
        conv = lambda k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dims)  # noqa: E731
        return jax.grad(lambda k: jnp.sum(jax.nn.relu(conv(k)) ** 2))(k)

    compiled = jax.jit(grad).lower(k, x).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    compiled(k, x).block_until_ready()
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(SAMPLE_S / 4)

    baseline = rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(20):
        compiled(k, x).block_until_ready()
    done.set()
    sampler.join()
    return (
        f"one conv gradient (batch 512, 8x8, 16->32): XLA reports {temp / 1e6:.1f} MB of temporaries; "
        f"its calls raise the RSS by {(peak[0] - baseline) / 1e6:.1f} MB"
    )


def estimate(overrides: list[str]) -> float:
    proc = subprocess.run(
        [sys.executable, "-m", "research.train", *overrides, "trainer.dry_run=true"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    print(proc.stdout, flush=True)
    m = re.search(r"estimated peak\s+([\d.]+) (GB|MB|kB)", proc.stdout)
    return float(m.group(1)) * {"GB": 1e9, "MB": 1e6, "kB": 1e3}[m.group(2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--measure", nargs="*", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--conv", action="store_true", help="only the convolution's scratch check")
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    if args.conv:
        print(conv_scratch())
        return
    rows = [
        "| case | estimated peak (MB) | measured, warm process (MB) | error | measured, first run (MB) "
        "| error | arrays at the loop's start (MB) | the process's other memory (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.case or list(CASES):
        label, overrides = CASES[name][0], [*CASES[name][1], *COMMON]
        planned = estimate(overrides)
        got = measured_peak(overrides)
        warm, first = got["warm"]["measured"], got["first"]["measured"]
        rows.append(
            f"| {label} | {planned / 1e6:,.1f} | {warm / 1e6:,.1f} | {planned / warm - 1:+.0%} "
            f"| {first / 1e6:,.1f} | {planned / first - 1:+.0%} | {got['warm']['live_at_start'] / 1e6:,.1f} "
            f"| {got['warm']['other'] / 1e6:,.0f} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


def measured_peak(overrides: list[str]) -> dict:
    """The ``--measure`` child's figures: a fresh process, as a user's run."""
    child = subprocess.run(
        [sys.executable, __file__, "--measure", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, **MALLOC},
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
