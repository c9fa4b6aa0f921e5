"""The dry run's estimate of peak memory per device against a real run's measured peak, on the CPU.

For each case: ``python -m research.train <case> trainer.dry_run=true`` prints the estimate (and
fills the persistent compilation cache); then the same config trains for real in a fresh
process, whose resident memory (``/proc/self/statm``, sampled every ``SAMPLE_S``) is read from
just before ``experiment.run`` to its end: measured = the highest RSS less that baseline. On a
CPU, device buffers are host memory, so this is the device memory the run used, plus what the
process allocates besides (the compiler's working memory, which the warm cache keeps small;
Python objects). That part is measured apart, as the peak of a run whose device memory is
negligible (``NULL``: a 16-unit MLP), and shown subtracted. Checkpoints and plots are off: an
async save's host copy of the state is not device memory on an accelerator, and the plan does
not count it.

    python bench/plan_vs_measured.py               # every case, ~5 min on a quiet 2-core CPU
    python bench/plan_vs_measured.py --case mlp_4096
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
]
CASES = {  # name: overrides; each trains a few hundred milliseconds' worth of steps, big state
    "mlp_4096": [
        "+experiment=digits_mlp", "model.hidden_sizes=[4096,4096,4096]", "trainer.max_steps=32",
        "trainer.eval_every=16",
    ],
    "mlp_2048_batch_1024": [
        "+experiment=digits_mlp", "model.hidden_sizes=[2048,2048]", "data.batch_size=1024",
        "trainer.max_steps=16", "trainer.eval_every=8",
    ],
    "cnn_batch_512": [
        "+experiment=digits_cnn", "data.batch_size=512", "trainer.max_steps=16", "trainer.eval_every=8",
    ],
}  # fmt: skip
NULL = ["+experiment=digits_mlp", "model.hidden_sizes=[16]", "trainer.max_steps=32", "trainer.eval_every=16"]
SAMPLE_S = 0.002
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def measure(overrides: list[str]) -> dict:
    """Train ``overrides`` in this process; the highest RSS above the level before the run."""
    from research import experiment
    from research.config import compose_train

    cfg = compose_train(overrides)
    experiment.prepare(cfg)  # the data is loaded and the task built before the baseline
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(SAMPLE_S)

    with tempfile.TemporaryDirectory() as run_dir:
        baseline = rss()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        summary = experiment.run(cfg, Path(run_dir))
        done.set()
        sampler.join()
    return {"measured": peak[0] - baseline, "compile_s": summary["compile_s"]}


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
        "| case | estimated peak (MB) | measured peak (MB) | estimate / measured "
        "| measured less the null run's (MB) | estimate / that |",
        "|---|---|---|---|---|---|",
    ]
    estimate([*NULL, *COMMON])  # its programs into the compilation cache too
    overhead = measured_peak([*NULL, *COMMON])
    print(f"null run (process memory that is not the device's): {overhead / 1e6:,.0f} MB", flush=True)
    for name in args.case or sorted(CASES):
        overrides = [*CASES[name], *COMMON]
        planned = estimate(overrides)
        measured = measured_peak(overrides)
        rows.append(
            f"| {name} | {planned / 1e6:,.0f} | {measured / 1e6:,.0f} | {planned / measured:.2f} "
            f"| {(measured - overhead) / 1e6:,.0f} | {planned / (measured - overhead):.2f} |"
        )
    print("\n".join(rows))


def measured_peak(overrides: list[str]) -> float:
    """The ``--measure`` child's figure: a fresh process, as a user's run."""
    child = subprocess.run(
        [sys.executable, __file__, "--measure", *overrides],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])["measured"]


if __name__ == "__main__":
    main()
