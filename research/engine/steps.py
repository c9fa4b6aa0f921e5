"""The compiled programs of a run: init, K train steps per dispatch, and the evaluators'.

Everything here is a pure function of the task's pure functions. Several seeds
(and a grid of learning rates) are one program: ``jax.vmap`` over a leading
replica axis of the state (and of the data indices, so each seed sees its own
order); see ``replicas.py``. The state keeps its shardings from step to step
(``out_shardings``), so a compiled step is never handed a layout it was not built for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from research import call_position
from research.engine.api import Task
from research.engine.flops import StepFlops, jaxpr_flops
from research.engine.replicas import Replicas

# One pool for the process: the jobs of an in-process sweep reuse its threads.
_COMPILER = ThreadPoolExecutor(thread_name_prefix="xla-compile")


def enable_compile_cache(directory: str | None) -> None:
    """Keep compiled programs on disk (XLA's persistent cache), so an identical run skips compiling.

    Every program is kept, however fast it compiled: a small run's many small
    programs are most of its start-up time. ``None`` leaves the cache off.
    """
    if not directory:
        return
    jax.config.update("jax_compilation_cache_dir", str(Path(directory).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class Programs:
    """Jitted, AOT-compiled step functions.

    ``compile_ahead`` lowers every program a run will need and compiles them in parallel
    threads (XLA compiles without the GIL), so a run with init, train and eval programs
    waits for the slowest, not for their sum. ``trace_s`` adds up tracing and lowering to
    StableHLO (paid on every run); ``compile_s`` adds up the time the run waits for XLA
    compilation, which the persistent compilation cache skips on a second identical run.
    ``step_flops`` counts the model FLOPs of one train step from the first train program
    traced (``flops.py``); ``kinds`` says which program each compiled entry is (the plan
    reads their memory).
    """

    def __init__(
        self,
        task: Task,
        gather: Callable,
        replicas: Replicas,
        per_seed_data: bool,
        state_sharding: Any,
        unoptimized: Sequence[str] = (),
    ):
        self.task, self.gather, self.replicas = task, gather, replicas
        self.unoptimized = set(unoptimized)
        self.trace_s = 0.0
        self.compile_s = 0.0
        self._cache: dict[Any, Any] = {}
        self.kinds: dict[Any, str] = {}
        self.step_flops: StepFlops | None = None
        vmapped = replicas.vmapped
        # One batch per seed or fold (repeated for each grid value), or one shared by all replicas.
        x_axis = 0 if per_seed_data and replicas.data_streams > 1 else None
        copies = replicas.count // replicas.data_streams

        def train_one(state, data, x):
            return task.train_step(state, gather(data, x))

        def train_replicas(state, data, x):
            if x_axis == 0 and copies > 1:
                x = jax.tree.map(lambda a: jnp.tile(a, (copies,) + (1,) * (a.ndim - 1)), x)
            return jax.vmap(train_one, in_axes=(0, None, x_axis))(state, data, x)

        step = train_replicas if vmapped else train_one

        def chunk(state, data, xs):
            """The steps of ``xs``, the last one traced apart (``research/call_position.py``): it
            alone measures the health signals and updates a per-call average, so the others
            carry no branch for them."""
            head, last = (jax.tree.map(lambda a, s=s: a[s], xs) for s in (slice(None, -1), -1))
            metrics, steps = None, jax.tree.leaves(xs)[0].shape[0]
            if steps > 1:
                with call_position.tracing(0):
                    state, metrics = jax.lax.scan(lambda s, x: step(s, data, x), state, head)
            with call_position.tracing(steps):
                state, final = step(state, data, last)
            if metrics is None:
                return state, jax.tree.map(lambda a: a[None], final)
            return state, jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, final)

        if vmapped and replicas.num_seeds == 1:  # one init key for every replica: init once, copy it
            count = replicas.count

            def init_one(rng, example):
                state = task.init(rng[0], example)
                return jax.tree.map(lambda a: jnp.broadcast_to(a, (count, *a.shape)), state)

        else:
            init_one = jax.vmap(task.init, in_axes=(0, None)) if vmapped else task.init

        def init(rng, example):
            return replicas.set_scales(init_one(rng, example))

        self._init = jax.jit(init, out_shardings=state_sharding)
        self._chunk = jax.jit(chunk, donate_argnums=0, out_shardings=(state_sharding, None))

    def submit(self, kind: str, fn: Any, *args: Any) -> tuple:
        """Lower ``fn`` for ``args`` (arrays or ShapeDtypeStructs) now, compile it in a thread.

        ``kind``: init, train or eval, the names ``trainer.unoptimized`` lists.
        """
        key = (fn, str(jax.tree.map(lambda a: getattr(a, "shape", None), args[1:])))
        if key not in self._cache:
            start = time.perf_counter()
            traced = fn.trace(*args)
            lowered = traced.lower()
            self.trace_s += time.perf_counter() - start
            if kind == "train" and self.step_flops is None:  # (state, data, xs): xs has a row per step
                steps = jax.tree.leaves(args[2])[0].shape[0]
                by_dtype = jaxpr_flops(traced.jaxpr)
                self.step_flops = StepFlops({d: f / steps for d, f in by_dtype.items()})
            self.kinds[key] = kind
            options = {"xla_backend_optimization_level": 0} if kind in self.unoptimized else None
            self._cache[key] = _COMPILER.submit(lowered.compile, options)
        return key

    def compiled(self, kind: str, fn: Any, *args: Any) -> Any:
        key = self.submit(kind, fn, *args)
        if isinstance(self._cache[key], Future):
            start = time.perf_counter()
            self._cache[key] = self._cache[key].result()
            self.compile_s += time.perf_counter() - start
        return self._cache[key]

    def compile_ahead(self, state: Any, init: tuple | None, train: tuple | None) -> None:
        """Start compiling the init and first train programs of a run before its first step.

        ``state``: the state's ShapeDtypeStructs with their shardings; ``init``: (rng, example),
        None when the state comes from a checkpoint; ``train``: (data, xs) of the first call,
        None when its batches are not known ahead (streamed data). Evaluators submit their own.
        """
        if init is not None:
            self.submit("init", self._init, *init)
        if train is not None:
            self.submit("train", self._chunk, state, *train)

    def compiled_programs(self) -> list[tuple[str, Any]]:
        """Every program submitted so far as (kind, compiled), waiting for those still compiling."""
        out = []
        for key, entry in list(self._cache.items()):
            if isinstance(entry, Future):
                start = time.perf_counter()
                self._cache[key] = entry.result()
                self.compile_s += time.perf_counter() - start
            out.append((self.kinds[key], self._cache[key]))
        return out

    def run(self, kind: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` through its compiled program (compiled now if it was not submitted)."""
        return self.compiled(kind, fn, *args)(*args)

    def init(self, rng: jax.Array, example: Any) -> Any:
        return self.run("init", self._init, rng, example)

    def train(self, state: Any, data: Any, xs: Any) -> tuple[Any, dict]:
        return self.run("train", self._chunk, state, data, xs)
