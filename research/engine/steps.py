"""The compiled programs of a run: init, K train steps per dispatch, and evaluation.

Everything here is a pure function of the task's pure functions. Several seeds
(and a grid of learning rates) are one program: ``jax.vmap`` over a leading
replica axis of the state (and of the data indices, so each seed sees its own
order); see ``replicas.py``. The state keeps its shardings from step to step
(``out_shardings``), so a compiled step is never handed a layout it was not built for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from research.engine.replicas import Replicas
from research.tasks.base import Task


def _tree_add(a: Any, b: Any) -> Any:
    return jax.tree.map(jnp.add, a, b)


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

    ``trace_s`` adds up tracing and lowering to StableHLO (paid on every run); ``compile_s`` adds up
    XLA compilation, which the persistent compilation cache skips on a second identical run.
    """

    def __init__(
        self, task: Task, gather: Callable, replicas: Replicas, per_seed_data: bool, state_sharding: Any
    ):
        self.task, self.gather, self.replicas = task, gather, replicas
        self.trace_s = 0.0
        self.compile_s = 0.0
        self._cache: dict[Any, Any] = {}
        vmapped = replicas.vmapped
        # One batch per seed (repeated for each grid value), or one batch shared by all replicas.
        x_axis = 0 if per_seed_data and replicas.num_seeds > 1 else None
        copies = replicas.count // replicas.num_seeds

        def train_one(state, data, x):
            return task.train_step(state, gather(data, x))

        def train_replicas(state, data, x):
            if x_axis == 0 and copies > 1:
                x = jax.tree.map(lambda a: jnp.tile(a, (copies,) + (1,) * (a.ndim - 1)), x)
            return jax.vmap(train_one, in_axes=(0, None, x_axis))(state, data, x)

        step = train_replicas if vmapped else train_one

        def chunk(state, data, xs):
            return jax.lax.scan(lambda s, x: step(s, data, x), state, xs)

        eval_step = jax.vmap(task.eval_step, in_axes=(0, None)) if vmapped else task.eval_step
        finalize = jax.vmap(task.finalize) if vmapped else task.finalize

        def evaluate(state, batches, mask):
            def body(acc, row):
                batch, m = row
                sums = eval_step(state, {**batch, "mask": m})
                return (sums if acc is None else _tree_add(acc, sums)), None

            first, _ = body(None, jax.tree.map(lambda a: a[0], (batches, mask)))
            sums, _ = jax.lax.scan(body, first, jax.tree.map(lambda a: a[1:], (batches, mask)))
            return finalize(sums)

        def evaluate_free(state):
            return finalize(eval_step(state, None))

        init_one = jax.vmap(task.init, in_axes=(0, None)) if vmapped else task.init

        def init(rng, example):
            return replicas.set_scales(init_one(rng, example))

        self._init = jax.jit(init, out_shardings=state_sharding)
        self._chunk = jax.jit(chunk, donate_argnums=0, out_shardings=(state_sharding, None))
        self._evaluate = jax.jit(evaluate)
        self._evaluate_free = jax.jit(evaluate_free)

    def _compiled(self, name: str, fn: Any, *args: Any) -> Any:
        key = (name, str(jax.tree.map(lambda a: getattr(a, "shape", None), args[1:])))
        if key not in self._cache:
            start = time.perf_counter()
            lowered = fn.lower(*args)
            traced = time.perf_counter()
            self._cache[key] = lowered.compile()
            self.trace_s += traced - start
            self.compile_s += time.perf_counter() - traced
        return self._cache[key]

    def init(self, rng: jax.Array, example: Any) -> Any:
        return self._compiled("init", self._init, rng, example)(rng, example)

    def abstract_state(self, rng: jax.Array, example: Any) -> Any:
        return jax.eval_shape(self._init, rng, example)

    def train(self, state: Any, data: Any, xs: Any) -> tuple[Any, dict]:
        return self._compiled("train", self._chunk, state, data, xs)(state, data, xs)

    def evaluate(self, state: Any, batches: Any, mask: Any) -> dict:
        return self._compiled("eval", self._evaluate, state, batches, mask)(state, batches, mask)

    def evaluate_free(self, state: Any) -> dict:
        return self._compiled("eval_free", self._evaluate_free, state)(state)
