"""Compile time and compiled memory of a train step with model.remat and model.scan_layers.

The character GPT of ``+experiment=shakespeare_char_transformer`` widened so that activations
dominate (width 256, 8 heads, MLP 1024, batch 16 x context 256: each block's attention
probabilities alone are 16 x 8 x 256 x 256 floats, 32 MiB), at 4, 12 and 24 blocks. The step is
the tasks' own shape (research/tasks/supervised.py): merge the model from plain arrays inside
one jitted function, the loss, its gradient, an SGD update. Nothing trains: each configuration
is lowered and compiled on abstract inputs, and XLA's ``compiled.memory_analysis()`` gives
``temp`` (the activations and other scratch buffers the step keeps alive: what remat cuts),
``argument`` (parameters and batch) and the compiled peak, argument + output - aliased + temp (the
parameters are donated: the updated ones are written in place). Compile time is wall time of
``lower`` + ``compile``.

    python bench/remat_scan.py                                  # the table in docs/benchmarks.md
    python bench/remat_scan.py --depths 2 --batch 2 --context 32   # checks the script in seconds
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from research.models.transformer import TransformerLM

VOCAB = 65  # Shakespeare's characters
POLICIES = ("none", "full", "dots_saveable")
MIB = 2**20


def build(args: argparse.Namespace, depth: int, scan: bool, remat: str) -> TransformerLM:
    return TransformerLM(
        VOCAB, args.context, args.dim, depth, args.heads, 4 * args.dim, 0.0, "learned", True,
        scan_layers=scan, remat=remat, rngs=nnx.Rngs(0),
    )  # fmt: skip


def compile_step(args: argparse.Namespace, depth: int, scan: bool, remat: str) -> dict:
    """Lower and compile one SGD step of the model on abstract inputs: seconds and MiB."""
    model = nnx.eval_shape(lambda: build(args, depth, scan, remat))
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    tokens = jax.ShapeDtypeStruct((args.batch, args.context + 1), jnp.int32)

    def step(params: dict, rest: dict, tokens: jax.Array) -> dict:
        def loss(params: dict) -> jax.Array:
            logits = nnx.merge(graph, params, rest)(tokens[:, :-1])
            logp = jax.nn.log_softmax(logits)
            return -jnp.take_along_axis(logp, tokens[:, 1:, None], -1).mean()

        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)

    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(params, rest, tokens).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    return {
        "compile_s": seconds,
        "temp_mib": memory.temp_size_in_bytes / MIB,
        "argument_mib": memory.argument_size_in_bytes / MIB,
        "peak_mib": (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        )
        / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 12, 24])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args()
    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__}, {device}; width {args.dim}, batch {args.batch} x {args.context}")
    print(
        "| blocks | scan_layers | remat | compile s | temp MiB | argument MiB | peak MiB "
        "| temp vs remat=none | peak vs remat=none |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for depth in args.depths:
        for scan in (False, True):
            base = None
            for remat in POLICIES:
                r = compile_step(args, depth, scan, remat)
                base = base or r
                cells = [depth, str(scan).lower(), remat, f"{r['compile_s']:.1f}", f"{r['temp_mib']:.0f}"]
                cells += [f"{r['argument_mib']:.0f}", f"{r['peak_mib']:.0f}"]
                cells += [f"{r[k] / base[k]:.2f}" for k in ("temp_mib", "peak_mib")]
                print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
