"""Evaluating with the weight average: the model's variables exchanged with their EMA.

The average lives in the optimizer state (``research/ema.py``); the task's ``optimized``
declaration says which optimizer state belongs to which model key. Exchanging the two (the
average in the model's place, the trained weights in the average's) gives a state of the
same structure, shapes and shardings, so every evaluator, sampler and exporter runs on it
unchanged and no program compiles twice; exchanging again gives the state back.
"""

from __future__ import annotations

from typing import Any

import jax

from research import ema
from research.engine.api import Task

EMA, RAW = "ema", "raw"


def _pairs(task: Task, state: Any) -> list[tuple[str, str]]:
    pairs = getattr(task, "optimized", (("params", "opt_state"),))
    return [(m, o) for m, o in pairs if m in state and o in state and ema.find(state[o]) is not None]


def averaged(task: Task, state: Any) -> bool:
    """Whether ``state`` holds a weight average of any of its models."""
    return isinstance(state, dict) and bool(_pairs(task, state))


def exchange(task: Task, state: Any) -> Any:
    """``state`` with each averaged model's variables and its average exchanged (an involution)."""
    if not isinstance(state, dict):
        return state
    out = dict(state)
    for model, opt in _pairs(task, state):
        average, out[opt] = ema.exchange(state[opt], state[model])
        out[model] = jax.tree.map(_placed_like, average, state[model])
    return out


def in_front(task: Task, state: Any, weights: str) -> Any:
    """``state`` with ``weights`` (ema or raw) where the model's variables are read."""
    return exchange(task, state) if weights == EMA and averaged(task, state) else state


def other(weights: str) -> str:
    return RAW if weights == EMA else EMA


def _placed_like(value: Any, like: Any) -> Any:
    """``value`` on ``like``'s devices and layout, so a program compiled for the model accepts it
    (a mesh rule that names ``params/`` alone would leave the average laid out otherwise)."""
    sharding = getattr(like, "sharding", None)
    if sharding is None or getattr(value, "sharding", None) == sharding:
        return value
    return jax.device_put(value, sharding)
