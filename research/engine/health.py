"""Training-health signals as records, and who to blame when a loss goes non-finite.

The optimizer keeps them in its state (``research/watch.py``); the task's ``optimized``
declaration says which model each optimizer state trains. At a log step the loop reads
them (a few scalars per layer group) into the record:

    train/grad_norm, train/param_norm, train/update_ratio       (the whole model)
    train/grad_norm/<group>, train/param_norm/<group>, ...      (per layer group)

``train/<model>/...`` instead when the task trains several models (a GAN's generator and
discriminator). ``update_ratio`` is |update| / |parameters|. With several replicas each
value is their mean, with ``_std`` and ``_per_seed`` beside it, as every metric is.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from research import prune, watch
from research.engine.api import Task
from research.engine.evaluation import scalar_record

TINY = 1e-12  # keeps the ratio finite for a group of zero parameters


def _found(task: Task, state: Any) -> list[tuple[str, watch.HealthState]]:
    pairs = getattr(task, "optimized", (("params", "opt_state"),))
    found = [(m, watch.find(state[o])) for m, o in pairs if isinstance(state, dict) and o in state]
    return [(m, h) for m, h in found if h is not None]


def signals(task: Task, state: Any) -> dict[str, Any]:
    """The record entries of the health signals ``state`` holds (none when it holds none)."""
    found = _found(task, state)
    out: dict[str, Any] = sparsity(task, state)
    for model, health in found:
        health = jax.device_get(health)
        prefix = "train" if len(found) == 1 else f"train/{model}"
        grad, param, update = (
            {g: np.asarray(v, np.float64) for g, v in norms.items()}
            for norms in (health.grad_norm, health.param_norm, health.update_norm)
        )
        totals = {
            name: _total(norms) for name, norms in (("grad", grad), ("param", param), ("update", update))
        }
        out.update(scalar_record(f"{prefix}/grad_norm", totals["grad"]))
        out.update(scalar_record(f"{prefix}/param_norm", totals["param"]))
        out.update(scalar_record(f"{prefix}/update_ratio", totals["update"] / (totals["param"] + TINY)))
        for g in grad:
            out.update(scalar_record(f"{prefix}/grad_norm/{g}", grad[g]))
            out.update(scalar_record(f"{prefix}/param_norm/{g}", param[g]))
            out.update(scalar_record(f"{prefix}/update_ratio/{g}", update[g] / (param[g] + TINY)))
    return out


def sparsity(task: Task, state: Any) -> dict[str, Any]:
    """``train/sparsity`` and ``train/sparsity/<parameter path>``: the fraction of pruned weights
    (research/prune.py) per pruned parameter and over all of them, when the optimizer prunes."""
    pairs = getattr(task, "optimized", (("params", "opt_state"),))
    found = [(m, prune.find(state[o])) for m, o in pairs if isinstance(state, dict) and o in state]
    found = [(m, p) for m, p in found if p is not None]
    out: dict[str, Any] = {}
    for model, pruning in found:
        prefix = "train/sparsity" if len(found) == 1 else f"train/{model}/sparsity"
        for path, value in prune.sparsity(pruning).items():
            out.update(scalar_record(prefix if path == prune.ALL else f"{prefix}/{path}", value))
    return out


def _total(norms: dict[str, np.ndarray]) -> np.ndarray:
    """The norm over every group from the groups' norms."""
    return np.sqrt(sum(np.square(v) for v in norms.values()))


def blame(task: Task, state: Any, checked: bool = True) -> str:
    """Where the non-finite gradients began: '; the gradient of <groups> (<model>) first went
    non-finite at update N', or '' when the state knows of none (or holds no signals); when the
    updates were not ``checked`` (trainer.blame_nonfinite), how to find out."""
    if not checked:
        if not _found(task, state):
            return ""
        return "; trainer.blame_nonfinite=true names the layer group whose gradient went non-finite first"
    parts = []
    for model, health in _found(task, state):
        health = jax.device_get(health)
        started = np.asarray(health.bad_update).reshape(-1)
        if not (started > 0).any():
            continue
        replica = int(np.argmax(started > 0))
        groups = [g for g, bad in health.bad_groups.items() if np.asarray(bad).reshape(-1)[replica]]
        where = f"{', '.join(groups)} of {model}" if len(_found(task, state)) > 1 else ", ".join(groups)
        seed = f" (replica {replica})" if started.size > 1 else ""
        parts.append(f"the gradient of {where} first went non-finite at update {started[replica]}{seed}")
    return f"; {'; '.join(parts)}" if parts else ""
