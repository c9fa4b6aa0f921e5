"""Reusing another run's parameters: ``trainer.init_from=<run dir or checkpoint dir>``.

The source checkpoint is read as plain arrays (no target, so any structure reads);
its model variables (the task's ``reusable`` state keys) are matched to the new
state's by path and shape. Orbax would load partial weights silently when
structures differ (orbax#2972), so the matching and the report are done here:
what was loaded, what was skipped (excluded or absent), what keeps its fresh
initialisation because the shapes differ. Nothing loaded at all, or any
mismatch with ``strict``, or a path the checkpoint lacks (another architecture: exclude
it to keep it fresh on purpose) is an error that lists the mismatched paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.errors import ConfigError
from research.optim import param_path


def checkpoint_step_dir(path: str | Path) -> Path:
    """The step directory ``path`` means: itself, or the best (else latest) step of a run or
    its ``checkpoints/`` folder.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"trainer.init_from.path={str(path)!r} does not exist")
    if (path / "state").is_dir():
        return path
    ckpts = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit() and (p / "state").is_dir())
    if not steps:
        raise ConfigError(
            f"trainer.init_from.path={str(path)!r} holds no checkpoint (a run dir, or a step dir)"
        )
    best = _best_step(ckpts / str(steps[-1]) / "meta")
    return ckpts / str(best if best in steps else steps[-1])


def _best_step(meta_dir: Path) -> int | None:
    for f in meta_dir.glob("*"):
        try:
            return json.loads(f.read_text()).get("best_step")
        except (ValueError, OSError):
            continue
    return None


def read_arrays(step_dir: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint's state by path (``params/hidden/0/kernel``), as numpy."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore((step_dir / "state").absolute())
    return {param_path(p): _host(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _host(value: Any) -> np.ndarray:
    if jax.dtypes.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    return np.asarray(value)


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def init_from(
    state: Any,
    target: Any,
    reusable: tuple[str, ...],
    path: str,
    include: list[str] = (".*",),
    exclude: list[str] = (),
    strict: bool = False,
) -> Any:
    """``state`` with the source run's matching model variables loaded; prints the report."""
    step_dir = checkpoint_step_dir(path)
    source = read_arrays(step_dir)
    inc, exc = _patterns("include", include), _patterns("exclude", exclude)
    report: dict[str, list[str]] = {"loaded": [], "excluded": [], "absent": [], "mismatched": []}

    def load(key_path: tuple, leaf: Any, spec: Any) -> Any:
        name = param_path(key_path)
        if name.split("/", 1)[0] not in reusable or _is_key(leaf):  # RNG streams stay fresh
            return leaf
        if not any(r.search(name) for r in inc) or any(r.search(name) for r in exc):
            report["excluded"].append(name)
            return leaf
        if name not in source:
            report["absent"].append(name)
            return leaf
        value = source[name]
        if value.shape != tuple(leaf.shape):
            if value.shape != tuple(leaf.shape[1:]):  # a single run into each of several replicas
                report["mismatched"].append(f"{name} {value.shape} -> {tuple(leaf.shape)}")
                return leaf
            value = np.broadcast_to(value, leaf.shape)
        report["loaded"].append(name)
        return jax.device_put(jnp.asarray(value, leaf.dtype), spec.sharding)

    new = jax.tree_util.tree_map_with_path(load, state, target)
    _check(report, step_dir, strict)
    _print_report(report, step_dir)
    return new


def _patterns(key: str, patterns: Any) -> list[re.Pattern]:
    try:
        return [re.compile(p) for p in patterns]
    except (re.error, TypeError) as e:
        raise ConfigError(f"trainer.init_from.{key}={list(patterns)} holds an invalid regex: {e}") from None


def _check(report: dict, step_dir: Path, strict: bool) -> None:
    """A path the checkpoint lacks means another architecture: an error unless excluded. A shape
    that differs (a head for another number of classes) is re-initialised unless ``strict``.
    """
    if report["loaded"] and not report["absent"] and not (strict and report["mismatched"]):
        return
    parts = report["mismatched"][:8] + (
        [f"not in it: {', '.join(report['absent'][:8])}"] if report["absent"] else []
    )
    raise ConfigError(
        f"trainer.init_from: the checkpoint {step_dir} does not fit this model ({'; '.join(parts)}); "
        "choose a compatible run, or exclude those paths with trainer.init_from.exclude=[...]"
    )


def _print_report(report: dict, step_dir: Path) -> None:
    print(f"init_from {step_dir}:", flush=True)
    for kind in ("loaded", "mismatched", "absent", "excluded"):
        if report[kind]:
            reinit = "" if kind == "loaded" else " (re-initialised)"
            print(f"  {kind}{reinit} {len(report[kind])}: {', '.join(report[kind])}", flush=True)
