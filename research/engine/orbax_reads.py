"""Reading Orbax checkpoints: a damaged one is one line, never a wall of tracebacks.

``orbax()`` is ``orbax.checkpoint`` with its failed reads settled before their event loop
closes (see ``_settling``); ``reading`` turns any failure of a read into ``CheckpointUnreadable``
naming the step; ``saved_shapes`` and ``shape_mismatches`` compare a checkpoint with a state
from its metadata alone, without reading an array.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from research.errors import CheckpointUnreadable, UserError

SETTLE_S = 10.0  # how long a failed Orbax read waits for its other reads in flight


def orbax() -> Any:
    """``orbax.checkpoint``, its failed reads settled before their event loop closes."""
    import orbax.checkpoint as ocp
    from orbax.checkpoint._src import asyncio_utils

    run = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
    if run is not None and not getattr(run, "settles", False):
        asyncio_utils._run_sync_via_new_loop = _settling(run)
    return ocp


def _settling(run: Callable[[Coroutine], Any]) -> Callable[[Coroutine], Any]:
    """Orbax's ``run_sync`` runs a read in a fresh asyncio loop and closes the loop as soon as the
    read raises. A read gathers one TensorStore operation per array, and the first failure raises
    while the others are still in flight; each of those then completes on a TensorStore thread,
    calls back into the closed loop and prints a ``RuntimeError: Event loop is closed`` traceback
    (dozens for one corrupt checkpoint). ``run`` wrapped so that a failed read first waits for the
    operations it started, and the loop closes with nothing left to call it.
    """

    def run_settled(coro: Coroutine) -> Any:
        return run(_settled(coro))

    run_settled.settles = True  # type: ignore[attr-defined]
    return run_settled


async def _settled(coro: Coroutine) -> Any:
    try:
        return await coro
    except Exception:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if others:  # gathered with the read: their errors count as retrieved
            await asyncio.wait(others, timeout=SETTLE_S)
        raise


def unreadable(step_dir: Path, error: BaseException) -> CheckpointUnreadable:
    """One line naming the step directory and the innermost cause (Orbax wraps TensorStore's), its
    paths shown relative to the step directory.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    line = (str(error).splitlines() or [""])[0].split(" [tensorstore_spec=")[0]  # TensorStore's spec: long
    text = line.replace(f"{step_dir}{os.sep}", "")[:300]
    return CheckpointUnreadable(
        f"checkpoint at step {step_dir.name} ({step_dir}) cannot be read ({type(error).__name__}: {text})"
    )


@contextlib.contextmanager
def reading(step_dir: Path) -> Iterator[None]:
    """Any failure of the Orbax read in the block as CheckpointUnreadable: Orbax and TensorStore raise
    ValueError, OSError, KeyError, JSON and Unicode errors, and bare Exceptions for a damaged file.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        raise unreadable(step_dir, e) from e


def saved_shapes(state_dir: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Path -> (shape, dtype) of every array of a saved state (``Checkpointer.state_dir``), read
    from its metadata only; CheckpointUnreadable when that cannot be read.

    The handler, not a Checkpointer: a Checkpointer's ``metadata`` logs a failed read and returns no
    arrays, which would look like a checkpoint of another model.
    """
    import jax

    from research.optim import param_path

    state_dir = Path(state_dir).absolute()  # Orbax reads no arrays on a relative path
    handler = orbax().StandardCheckpointHandler()
    try:
        with reading(state_dir.parent):
            tree = handler.metadata(state_dir).tree
    finally:
        handler.close()
    return {
        param_path(p): (tuple(v.shape), str(v.dtype)) for p, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def shape_mismatches(state_dir: Path, abstract_state: Any) -> list[str]:
    """What differs between a checkpoint's arrays and ``abstract_state``: ``path: saved -> new``;
    CheckpointUnreadable when the checkpoint cannot be read.
    """
    import jax

    from research.optim import param_path

    def stored(a: Any) -> tuple[tuple[int, ...], str]:
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed keys are stored as key data
            a = jax.eval_shape(jax.random.key_data, a)
        return tuple(a.shape), str(a.dtype)

    saved = saved_shapes(state_dir)
    new = {param_path(p): stored(a) for p, a in jax.tree_util.tree_leaves_with_path(abstract_state)}

    def order(keys: set[str]) -> list[str]:  # model variables before optimizer statistics
        return sorted(keys, key=lambda k: (k.startswith("opt_state"), k))

    out = [
        f"{k}: {saved[k][0]} -> {new[k][0]}" for k in order(saved.keys() & new.keys()) if saved[k] != new[k]
    ]
    out += [f"{k}: only in the checkpoint" for k in order(saved.keys() - new.keys())]
    out += [f"{k}: not in the checkpoint" for k in order(new.keys() - saved.keys())]
    return out
