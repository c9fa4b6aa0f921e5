"""Tokens/s and model FLOPs utilisation of the GPT at GPT-2-small size (issue 9's GPU figure).

The framework's own compiled train chunk (``bench/gpu_throughput.py``'s machinery: K scanned
steps per dispatch, compile excluded) on ``+experiment=shakespeare_char_transformer`` resized
to GPT-2 small: 12 blocks, width 768, 12 heads, MLP 3072, context 1024 (character vocabulary,
so ~85M parameters instead of 124M: the embedding is small). MFU counts model FLOPs as nanoGPT
and PaLM do, 6 N + 12 L d T per token (N non-embedding parameters, L blocks, d width, T
context), over the data-sheet bfloat16 peak; XLA's own count of one step is printed beside it.
Target: >= 40% on an H100/H200.

    python bench/lm_mfu.py                          # GPT-2 small, bfloat16, batch 16
    python bench/lm_mfu.py --batch 32 --precision float32
    python bench/lm_mfu.py --tiny --seconds 1       # 1 small block: checks the script on a CPU
    python bench/lm_mfu.py model.remat=full         # any config override after the options
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from gpu_throughput import peak_flops, setup, step_flops, steps_per_s  # bench/ is on sys.path

RECIPE = "+experiment=shakespeare_char_transformer"
GPT2_SMALL = {"depth": 12, "dim": 768, "num_heads": 12, "mlp_dim": 3072, "context": 1024}
TINY = {"depth": 1, "dim": 64, "num_heads": 2, "mlp_dim": 256, "context": 128}
STEPS_PER_CALL = 8  # train steps scanned per dispatch


def size_overrides(size: dict) -> list[str]:
    """The recipe's overrides that give it ``size`` (also ``lm_tokens_per_s.py --gpt2-small``'s)."""
    model = [f"model.{k}={v}" for k, v in size.items() if k != "context"]
    return [f"data.context={size['context']}", *model]


def model_flops_per_token(state: dict, size: dict) -> tuple[float, int, int]:
    """nanoGPT's estimate: 6 N + 12 L d T, N = parameters without the position embedding;
    also (all parameters, position-embedding parameters).
    """
    params = state["params"]
    total = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    positions = sum(
        int(np.size(x))
        for path, x in jax.tree_util.tree_leaves_with_path(params)
        if "pos" in jax.tree_util.keystr(path).lower()
    )
    n = total - positions
    return 6 * n + 12 * size["depth"] * size["dim"] * size["context"], total, positions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds (whole calls)")
    parser.add_argument("--tiny", action="store_true", help="one small block, to check the script")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.remat=full")
    args = parser.parse_args()
    size = TINY if args.tiny else GPT2_SMALL
    overrides = [RECIPE, *size_overrides(size), f"trainer.steps_per_call={STEPS_PER_CALL}", *args.overrides]
    task, feed, programs, state = setup(overrides, args.batch, args.precision, seeds=1)
    per_token, num_params, positions = model_flops_per_token(state, size)  # before the timing donates it
    rate = steps_per_s(feed, programs, state, args.seconds, STEPS_PER_CALL)
    tokens = args.batch * size["context"]
    peak, source = peak_flops(args.precision)
    achieved = rate * tokens * per_token
    result = {
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "size": size,
        "batch": args.batch,
        "precision": args.precision,
        "overrides": args.overrides,
        "params": num_params,
        "position_params": positions,
        "steps_per_s": round(rate, 3),
        "tokens_per_s": round(rate * tokens),
        "model_gflop_per_step": round(per_token * tokens / 1e9, 3),
        "xla_gflop_per_step": round(step_flops(task, feed) / 1e9, 3),
        "achieved_model_tflop_per_s": round(achieved / 1e12, 4),
        "peak_tflop_per_s": round(peak / 1e12, 3),
        "peak_source": source,
        "mfu": round(achieved / peak, 4),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
