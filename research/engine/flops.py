"""Model FLOPs of a compiled step, the device's peak, and the throughput records built from them.

FLOPs are counted from the step's program as JAX traced it (its jaxpr): every matrix
multiply (``dot_general``) and convolution, 2 per multiply-add, loops multiplied by their
length. That is what MFU counts (PaLM, nanoGPT, MaxText count matmul FLOPs) and what a
data sheet's peak measures; it is the same on every backend. XLA's own cost analysis of
the compiled program is kept beside it as a cross-check but is not used for MFU: it counts
a loop's body once, adds elementwise work, and on GPUs misses the GEMMs it hands to cuBLAS
as custom calls (docs/benchmarks.md, "Throughput and model FLOPs utilisation").

The peak is the data sheet's dense figure per chip for known accelerators (``PEAKS``), or
``trainer.peak_tflops``, or on a CPU (and any device not in the table) the best of a few
square matmuls measured once per process.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxprs_in_params

# Dense peak TFLOP/s per chip, without sparsity, by a substring of ``device.device_kind``
# (most specific first). float32 matmuls run as TF32 on NVIDIA GPUs (JAX's default
# precision there) and as bfloat16 passes on TPUs. Sources: NVIDIA H100 data sheet (SXM and
# PCIe columns), H200 data sheet, A100 data sheet; Google Cloud TPU system architecture
# pages for v4, v5e ("TPU v5 lite"), v5p ("TPU v5") and v6e Trillium ("TPU v6 lite").
PEAKS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
    "H100": {"bfloat16": 989.4, "float32": 494.7},  # SXM
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0},
    "TPU v5": {"bfloat16": 459.0, "float32": 459.0},  # v5p
    "TPU v6 lite": {"bfloat16": 918.0, "float32": 918.0},
}
HALF = ("bfloat16", "float16")  # run at the bfloat16 peak; every other dtype at the float32 peak
MATMUL_SIZE = 1024  # the square matmul that measures a peak: ~2 GFLOP, ~15 ms on a 2-core CPU
MATMUL_REPEATS = 5  # best of


@dataclasses.dataclass
class StepFlops:
    """Matmul and convolution FLOPs of one train step (all replicas, the whole mesh), by dtype."""

    by_dtype: dict[str, float]

    @property
    def total(self) -> float:
        return float(sum(self.by_dtype.values()))

    def seconds_at_peak(self, peak: Any) -> float:
        """Time the step's FLOPs take at ``peak(dtype)`` FLOP/s: the denominator of MFU."""
        return sum(f / peak(_peak_dtype(d)) for d, f in self.by_dtype.items() if f)


def _peak_dtype(dtype: str) -> str:
    return "bfloat16" if dtype in HALF else "float32"


def jaxpr_flops(jaxpr: Any) -> dict[str, float]:
    """FLOPs of the matmuls and convolutions in ``jaxpr`` (a Jaxpr or ClosedJaxpr), by operand dtype.

    ``scan`` bodies count ``length`` times, ``cond`` its costliest branch, ``while`` bodies once
    (their trip count is not known when tracing).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    out: dict[str, float] = {}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            _add(out, str(eqn.invars[0].aval.dtype), _dot_flops(eqn))
        elif name == "conv_general_dilated":
            _add(out, str(eqn.invars[0].aval.dtype), _conv_flops(eqn))
        elif name == "cond":
            branches = [jaxpr_flops(b) for b in eqn.params["branches"]]
            _merge(out, max(branches, key=lambda b: sum(b.values())), 1)
        else:
            times = eqn.params["length"] if name == "scan" else 1
            for sub in jaxprs_in_params(eqn.params):
                _merge(out, jaxpr_flops(sub), times)
    return out


def _dot_flops(eqn: Any) -> float:
    (contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * np.prod(eqn.outvars[0].aval.shape, dtype=float) * np.prod([lhs[d] for d in contract])


def _conv_flops(eqn: Any) -> float:
    """2 x output size x the kernel's size per output feature (its inputs and window)."""
    kernel = eqn.invars[1].aval.shape
    out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
    per_output = np.prod(kernel, dtype=float) / kernel[out_feature_dim]
    return 2.0 * np.prod(eqn.outvars[0].aval.shape, dtype=float) * per_output


def _add(out: dict, dtype: str, flops: float) -> None:
    out[dtype] = out.get(dtype, 0.0) + float(flops)


def _merge(out: dict, other: dict, times: float) -> None:
    for dtype, flops in other.items():
        _add(out, dtype, flops * times)


def xla_flops(compiled: Any) -> float | None:
    """XLA's own count for a compiled program (loop bodies once), None where the backend has none."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends and versions do not implement it
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def data_sheet_peak(kind: str, dtype: str) -> float | None:
    """Peak FLOP/s per chip of a device kind from ``PEAKS``; None when it is not listed."""
    for name, peaks in PEAKS.items():
        if name in kind:
            return peaks[dtype] * 1e12
    return None


@functools.cache
def measured_peak(dtype: str) -> float:
    """Best of a few ``MATMUL_SIZE`` square matmuls on the default device, FLOP/s (once per process)."""
    a = jnp.ones((MATMUL_SIZE, MATMUL_SIZE), dtype)
    matmul = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / best


class Peak:
    """The peak FLOP/s of the run's devices for a dtype, and where the figure comes from.

    ``chips``: devices of the mesh on an accelerator; a CPU's peak is measured for the whole
    process (its devices share the cores), so it counts once.
    """

    def __init__(self, peak_tflops: float | None, device: Any, num_devices: int):
        self.override = peak_tflops
        self.kind = device.device_kind
        self.chips = 1 if device.platform == "cpu" else num_devices

    def per_chip(self, dtype: str) -> float:
        if self.override is not None:
            return self.override * 1e12
        return data_sheet_peak(self.kind, dtype) or measured_peak(dtype)

    def __call__(self, dtype: str) -> float:
        return self.per_chip(dtype) * self.chips

    @property
    def source(self) -> str:
        if self.override is not None:
            return "trainer.peak_tflops"
        return "data sheet" if data_sheet_peak(self.kind, "float32") else "measured matmul"


class Throughput:
    """``train/examples_per_s``, ``train/tflops_per_s`` and ``train/mfu`` from a steps-per-second rate."""

    def __init__(self, examples_per_step: int | None, peak: Peak, step_flops: Any):
        self.examples_per_step, self.peak = examples_per_step, peak
        self._step_flops = step_flops  # () -> StepFlops | None: known once the train program is traced

    def record(self, steps_per_s: float) -> dict[str, float]:
        out = {}
        if self.examples_per_step:
            out["train/examples_per_s"] = steps_per_s * self.examples_per_step
        flops = self._step_flops()
        if flops is not None:  # a step without matmuls (an embedding lookup model) has an MFU of 0
            out["train/flops_per_step"] = flops.total
            out["train/tflops_per_s"] = steps_per_s * flops.total / 1e12
            out["train/mfu"] = steps_per_s * flops.seconds_at_peak(self.peak) if flops.total else 0.0
        return out
