"""A run's memory and compile cost, known before it trains (``trainer.dry_run=true``).

The run is laid out as ``fit`` lays it out (mesh, shardings, the abstract state, the data on
device) and every program it starts with (init, the first train call, the evaluators') is
traced and compiled ahead of time, as a real run does, but no state is created and nothing
is written. Per device it reads:

- parameters and the rest of the state (optimizer moments, step, rng) from the state's
  shapes and shardings;
- the data on device (the in-memory train split, the padded val/test batches);
- a copy of the state, when evaluators run during training (the loop keeps the best state
  on device until it is saved);
- the largest transient of any program, from XLA's ``memory_analysis``: its peak less its
  arguments (activations, gradients, temporaries and outputs not written in place), plus on a
  CPU what its library kernels allocate beside it (``cpu_kernels``: YNNPACK's fusions).

The estimated peak is their sum, or the init program's transient (the state it creates) over
the data, when that is larger: no state exists before init. ``bench/plan_vs_measured.py``
compares it with a real run's measured peak (docs/benchmarks.md, "The dry run's memory
estimate"). One thing is not counted: the working memory of XLA:CPU's convolution kernels
(Eigen's), so when a CPU program holds ``convolution`` ops (``model.conv_impl=xla``) the report
says so and how many.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from research.engine.cpu_kernels import convolutions, library_working_bytes
from research.engine.flops import xla_flops
from research.engine.sharding import batch_sharding
from research.errors import ConfigError

GB = 1e9


@dataclasses.dataclass
class Plan:
    """Per-device bytes of what a run holds, its FLOPs per train step and its compile time."""

    devices: int
    device_kind: str
    mesh: dict[str, int]
    parameters: int
    other_state: int
    data: int
    best_copy: int
    transient: int
    transient_program: str
    init: int  # the init program's transient: the fresh state and its temporaries
    flops_per_step: float
    xla_flops_per_step: float | None
    peak_flops: float  # the mesh's peak FLOP/s for this step's dtypes: train/mfu's denominator
    peak_source: str
    programs: int
    trace_s: float
    compile_s: float
    cpu_convolutions: int = 0  # lax.conv ops in the CPU programs: their working memory is not counted

    @property
    def peak(self) -> int:
        running = self.parameters + self.other_state + self.data + self.best_copy + self.transient
        return max(running, self.data + self.init)

    def summary(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        return {**fields, "peak": self.peak}


def plan_run(run: Any) -> Plan:
    """Compile ``run``'s first programs (a ``loop.Run`` built with checkpoints off) and read them."""
    _submit_train(run)
    run.compile_ahead(resumed=False, step=0)
    compiled = run.programs.compiled_programs()
    state = _state_bytes(run.target, run.task.trainable)
    on_cpu = run.mesh.devices.flat[0].platform == "cpu"
    transient, where, init = 0, "", 0
    for kind, program in compiled:
        t = _transient(program) + (library_working_bytes(program) if on_cpu else 0)
        if kind == "init":
            init = max(init, t)
        elif t > transient:
            transient, where = t, kind
    train = [p for kind, p in compiled if kind == "train"]
    xla = xla_flops(train[0]) if train else None  # a loop's body counted once: one step
    evaluating = bool(getattr(run.evaluation, "evaluators", None))
    mesh = dict(run.mesh.shape)
    return Plan(
        devices=run.mesh.size,
        device_kind=run.mesh.devices.flat[0].device_kind,
        mesh=mesh,
        parameters=state[0],
        other_state=state[1],
        data=_data_bytes(run),
        best_copy=sum(state) if evaluating else 0,
        transient=transient,
        transient_program=where,
        init=init,
        flops_per_step=run.programs.step_flops.total if run.programs.step_flops else 0.0,
        xla_flops_per_step=xla,
        peak_flops=_peak(run),
        peak_source=run.throughput.peak.source,
        programs=len(compiled),
        trace_s=run.programs.trace_s,
        compile_s=run.programs.compile_s,
        cpu_convolutions=max((convolutions(p) for _, p in compiled), default=0) if on_cpu else 0,
    )


def _peak(run: Any) -> float:
    """The step's FLOPs over their time at the peak of each dtype (the float32 peak without any)."""
    step, peak = run.programs.step_flops, run.throughput.peak
    seconds = step.seconds_at_peak(peak) if step else 0.0
    return step.total / seconds if seconds else peak("float32")


def _submit_train(run: Any) -> None:
    """The first train call of a streamed run, whose batches a real run reads only when it starts."""
    if run.feed.by_step:
        return
    n = run.call_len(0)
    example = run.feed.example()

    def spec(a: np.ndarray) -> jax.ShapeDtypeStruct:
        shape = (n, run.feed.batch_size, *a.shape[1:])
        return jax.ShapeDtypeStruct(shape, a.dtype, sharding=batch_sharding(run.mesh, shape, axis=1))

    run.programs.submit("train", run.programs._chunk, run.target, None, jax.tree.map(spec, example))


def _per_device(shape: tuple, dtype: Any, sharding: Any) -> int:
    shard = sharding.shard_shape(tuple(shape)) if sharding is not None else shape
    return int(np.prod(shard, dtype=np.int64)) * _itemsize(dtype)


def _itemsize(dtype: Any) -> int:
    """Bytes of one element; a PRNG key's are those of its key data (two uint32 for threefry)."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct((), dtype))
        return int(np.prod(data.shape, dtype=np.int64)) * np.dtype(data.dtype).itemsize
    return np.dtype(dtype).itemsize


def _state_bytes(target: Any, trainable: tuple[str, ...]) -> tuple[int, int]:
    """(parameters, the rest of the state) on one device."""
    params = other = 0
    for key, tree in target.items():
        size = sum(_per_device(a.shape, a.dtype, a.sharding) for a in jax.tree.leaves(tree))
        if key in trainable:
            params += size
        else:
            other += size
    return params, other


def _data_bytes(run: Any) -> int:
    """The arrays the run keeps on device for its whole length: train split, eval batches."""
    trees = [run.feed.data, getattr(run.evaluation, "data", None), getattr(run.evaluation, "fold_data", None)]
    leaves = [a for a in jax.tree.leaves(trees) if isinstance(a, jax.Array)]
    return sum(_per_device(a.shape, a.dtype, a.sharding) for a in leaves)


def _transient(compiled: Any) -> int:
    """What a program needs beyond its arguments while it runs: XLA's peak less the arguments."""
    m = compiled.memory_analysis()
    if m is None:
        return 0
    peak = getattr(m, "peak_memory_in_bytes", 0)
    if not peak:
        peak = (
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        )
    return max(int(peak - m.argument_size_in_bytes), int(m.temp_size_in_bytes))


def device_memory(setting_gb: float | None, device: Any) -> tuple[float | None, str]:
    """(bytes per device, where the figure comes from): the setting, else what JAX reports."""
    if setting_gb is not None:
        return setting_gb * GB, f"trainer.device_memory_gb={setting_gb:g}"
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return float(stats["bytes_limit"]), f"the {device.device_kind}'s memory"
    return None, ""


def check_fits(plan: Plan, limit: float | None, source: str) -> None:
    """One line when the estimated peak exceeds the device memory, and by how much."""
    if limit is None or plan.peak <= limit:
        return
    raise ConfigError(
        f"will not fit: needs {_size(plan.peak)} per device, {_size(plan.peak - limit)} more "
        f"than {source} ({_size(limit)}): shard the state (mesh=fsdp), lower data.batch_size or "
        "use a smaller model"
    )


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def report(plan: Plan, name: str, limit: float | None, source: str) -> str:
    """The plan as the lines a dry run prints."""
    mesh = " ".join(f"{k}={v}" for k, v in plan.mesh.items())
    xla = (
        ""
        if plan.xla_flops_per_step is None
        else f"; XLA's count of one device's program {plan.xla_flops_per_step / 1e9:.4g}"
    )
    fits = (
        f"fits: {_size(plan.peak)} of {_size(limit)} ({source}), {plan.peak / limit:.0%}"
        if limit is not None
        else "device memory unknown (a CPU reports none): set trainer.device_memory_gb to check the fit"
    )
    rows = [
        ("parameters", _size(plan.parameters)),
        ("optimizer, other state", _size(plan.other_state)),
        ("data on device", _size(plan.data)),
        ("best state copy", _size(plan.best_copy)),
        ("activations, temporaries", f"{_size(plan.transient)} (largest program: {plan.transient_program})"),
        ("init (state and data only)", _size(plan.data + plan.init)),
        ("estimated peak", _size(plan.peak)),
    ]
    lines = [
        f"dry run: {name} on {plan.devices} x {plan.device_kind} (mesh {mesh}); nothing trained or written",
        "memory per device:",
        *(f"  {label:<28}{value}" for label, value in rows),
        f"train step: {plan.flops_per_step / 1e9:.4g} GFLOP (matmuls and convolutions, all replicas){xla}",
        f"peak: {plan.peak_flops / 1e12:.4g} TFLOP/s over {plan.devices} device(s) ({plan.peak_source}): "
        "train/mfu's denominator",
        f"compile: {plan.programs} programs, traced in {plan.trace_s:.2f} s, "
        f"compiled in {plan.compile_s:.2f} s",
        fits,
    ]
    if plan.cpu_convolutions:
        lines.insert(
            -4,
            f"  not counted: the working memory of XLA:CPU's {plan.cpu_convolutions} convolution kernels "
            "(model.conv_impl=im2col has none; docs/benchmarks.md)",
        )
    return "\n".join(lines)
