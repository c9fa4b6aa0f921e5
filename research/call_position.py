"""Where in a dispatch the step being traced sits: the engine's calls run K steps, the last apart.

``engine/steps.py`` traces the first K - 1 steps of a call as one ``lax.scan`` and its last step
on its own. Work that needs doing once per call reads the position at trace time and puts no
code in the other steps, not even a ``lax.cond``. On XLA:CPU a ``cond`` pulls the update out of
its fused loop, and under ``jax.vmap`` (seeds in one program) it becomes a select that runs both
branches. Two readers do this: the health norms (``watch.py``) and a weight average updated once
per call (``ema.py``, ``every: call``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# None: not traced by the engine's calls (every step acts); 0: a scanned step; n: the last of n
_POSITION: contextvars.ContextVar[int | None] = contextvars.ContextVar("call_position", default=None)


@contextlib.contextmanager
def tracing(position: int) -> Iterator[None]:
    """Within (at trace time): the steps traced are scanned ones (0) or a call's last of ``position``.

    Read when an update is traced: a task that wrapped its own update in ``jax.jit`` would reuse
    one trace for both kinds of step (none does; their steps are traced whole by the engine).
    """
    token = _POSITION.set(position)
    try:
        yield
    finally:
        _POSITION.reset(token)


def current() -> int | None:
    """None outside the engine's calls, 0 on a scanned step, n on the last step of a call of n."""
    return _POSITION.get()
