"""cuDNN's fused attention against XLA's, at GPT-2-small shapes, and which one the model's path takes.

``research/models/transformer.py``'s ``attention_core`` asks ``jax.nn.dot_product_attention`` for
``implementation="cudnn"`` on a GPU with 16-bit inputs and falls back to XLA's otherwise; there is no
config switch, so this script times the two implementations directly (forward + backward of a
causal self-attention, bfloat16, batch 16 x 1024 tokens x 12 heads x 64) and checks that the model's
own ``attention_core`` compiles to the cuDNN kernel (a ``__cudnn$fmha`` custom call in the HLO).

    python bench/attention_cudnn.py                 # on a GPU
    python bench/attention_cudnn.py --tiny          # small shapes: checks the script on a CPU (XLA only)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.models.transformer import attention_core  # noqa: E402

GPT2_SMALL = (16, 1024, 12, 64)  # batch, tokens, heads, head dim
TINY = (2, 64, 2, 16)
REPEATS = 20


def timed_ms(fn, *args) -> float:
    """Median milliseconds of ``fn(*args)`` after a compiling call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def loss_and_grad(implementation: str | None):
    def loss(q, k, v):
        if implementation is None:  # the model's own path
            out = attention_core(q, k, v, None, True)
        else:
            out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)
        return out.astype(jnp.float32).sum()

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    b, t, n, h = TINY if args.tiny else GPT2_SMALL
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (b, t, n, h), jnp.bfloat16) for key in keys)
    # causal attention: half the T x T score matrix, forward (2 matmuls) + backward (5)
    flops = 7 * 2 * b * n * t * t * h / 2
    result = {"device": jax.devices()[0].device_kind, "shape_btnh": [b, t, n, h], "dtype": "bfloat16"}
    for name in ("xla", "cudnn"):
        try:
            ms = timed_ms(loss_and_grad(name), q, k, v)
        except Exception as e:  # cuDNN absent (CPU) or refusing the shapes
            result[name] = f"unavailable: {type(e).__name__}"
            continue
        result[name] = {"ms_fwd_bwd": round(ms, 3), "tflop_per_s": round(flops / ms / 1e9, 1)}
    if isinstance(result["xla"], dict) and isinstance(result["cudnn"], dict):
        result["cudnn_speedup"] = round(result["xla"]["ms_fwd_bwd"] / result["cudnn"]["ms_fwd_bwd"], 2)
    hlo = loss_and_grad(None).lower(q, k, v).compile().as_text()
    result["model_path_uses_cudnn"] = "__cudnn$fmha" in hlo
    print(json.dumps(result))


if __name__ == "__main__":
    main()
