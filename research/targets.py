"""Calling a config's ``_target_`` without Hydra: for the layers below the build step.

Hydra's ``instantiate`` stays in ``research/experiment.py``; the optimizer builder
names optax functions by ``_target_`` too, and resolves them here so that optim,
tasks and the engine run in a notebook without Hydra.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from research.errors import ConfigError


def locate(where: str, target: str) -> Callable:
    """The object ``target`` names (``optax.adam``, ``research.optim.multistep_schedule``)."""
    module_name, _, attr = str(target).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{where}._target_={target!r} cannot be imported") from None
    if not callable(obj):
        raise ConfigError(f"{where}._target_={target!r} is not callable")
    return obj


def call(where: str, spec: dict[str, Any], **kwargs: Any) -> Any:
    """``spec["_target_"](**spec_without_target, **kwargs)``; bad arguments are one ConfigError."""
    spec = dict(spec)
    fn = locate(where, spec.pop("_target_"))
    try:
        return fn(**spec, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where} ({fn.__module__}.{fn.__name__}): {str(e).splitlines()[0]}") from None
