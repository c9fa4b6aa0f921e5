"""The run's FLOP count (matmuls and convolutions of the traced train step) against nanoGPT's 6N + 12LdT.

``train/flops_per_step`` and ``train/mfu`` come from ``research.engine.flops.jaxpr_flops``; for
the character GPT (``+experiment=shakespeare_char_transformer``) at three sizes this prints it
beside ``bench/lm_mfu.py``'s hand formula (N parameters without the position embedding, L
blocks, d width, T context, per token) and XLA's own count of the compiled step. Also the
time the CPU's matmul peak takes to measure, once per process.

    python bench/flops_vs_formula.py      # ~1 min on a 2-core CPU (traces; compiles the small sizes)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from lm_mfu import GPT2_SMALL, TINY, model_flops_per_token, size_overrides  # bench/ is on sys.path

from research.config import compose_train
from research.engine import flops
from research.experiment import build

SIZES = {  # name: (size, batch)
    "recipe (4 x 128, context 64)": (
        {"depth": 4, "dim": 128, "num_heads": 4, "mlp_dim": 512, "context": 64},
        12,
    ),
    "lm_mfu --tiny (1 x 64, context 128)": (TINY, 2),
    "GPT-2 small (12 x 768, context 1024)": (GPT2_SMALL, 16),
}
COMPILED_UP_TO = 1e11  # FLOPs per step: larger sizes are traced only (XLA's count needs a compile)


def main() -> None:
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}\n")
    print("| model | batch | 6N + 12LdT (GFLOP/step) | counted | counted / formula | XLA's count |")
    print("|---|---|---|---|---|---|")
    for name, (size, batch) in SIZES.items():
        cfg = compose_train(
            ["+experiment=shakespeare_char_transformer", *size_overrides(size), "logger=none"]
        )
        task = build(cfg).task
        example = {"tokens": jnp.zeros((batch, size["context"] + 1), jnp.int32)}
        state = jax.eval_shape(task.init, jax.random.PRNGKey(0), example)
        shapes = {"params": jax.tree.map(lambda a: np.zeros(a.shape, np.int8), state["params"])}
        per_token, _, _ = model_flops_per_token(shapes, size)
        formula = per_token * batch * size["context"]
        traced = jax.jit(task.train_step).trace(state, example)
        counted = sum(flops.jaxpr_flops(traced.jaxpr).values())
        xla = flops.xla_flops(traced.lower().compile()) if counted < COMPILED_UP_TO else None
        xla_cell = f"{xla / 1e9:,.4g}" if xla else "(not compiled)"
        cells = [
            name,
            batch,
            f"{formula / 1e9:,.4g}",
            f"{counted / 1e9:,.4g}",
            f"{counted / formula:.3f}",
            xla_cell,
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    start = time.perf_counter()
    peak = flops.measured_peak("float32")
    print(
        f"\nCPU float32 matmul peak {peak / 1e9:.0f} GFLOP/s, measured in {time.perf_counter() - start:.2f} s"
    )


if __name__ == "__main__":
    main()
