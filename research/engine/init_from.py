"""Reusing another run's parameters: ``trainer.init_from=<run dir or checkpoint dir>``.

The source checkpoint is read as plain arrays (no target, so any structure reads);
its model variables (the task's ``reusable`` state keys) are matched to the new
state's by path and shape. Orbax would load partial weights silently when
structures differ (orbax#2972), so the matching and the report are done here:
what was loaded, what was skipped (excluded or absent), what keeps its fresh
initialisation because the shapes differ. Nothing loaded at all, or any
mismatch with ``strict``, or a path the checkpoint lacks (another architecture: exclude
it to keep it fresh on purpose) is an error that lists the mismatched paths. LoRA adapters
(optimizer.lora) are new by design: absent from the source, they keep their initialisation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.engine.checkpoint import BEST, STATE
from research.engine.settings import InitFromConfig
from research.errors import ConfigError
from research.models import lora
from research.models.stacking import to_layout
from research.optim import param_path

# A classifier's output layer: every model in research/models names it ``head``. Its shape fits a
# run of as many classes whichever they are, so only the class names tell that it scores others.
HEAD = ("params/head/kernel", "params/head/bias")


def checkpoint_state_dir(path: str | Path) -> Path:
    """The saved state ``path`` means: a step directory's own state, or the best (else latest)
    state of a run or of its ``checkpoints/`` folder (a best state may sit inside a later step).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"trainer.init_from.path={str(path)!r} does not exist")
    if (path / STATE).is_dir():
        return path / STATE
    ckpts = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit() and (p / STATE).is_dir())
    if not steps:
        raise ConfigError(
            f"trainer.init_from.path={str(path)!r} holds no checkpoint (a run dir, or a step dir)"
        )
    meta = _meta(ckpts / str(steps[-1]) / "meta")
    best = meta.get("best_step")
    if best in steps:
        return ckpts / str(best) / STATE
    home = meta.get("homes", {}).get(str(best))
    if home in steps and (ckpts / str(home) / BEST).is_dir():
        return ckpts / str(home) / BEST
    return ckpts / str(steps[-1]) / STATE


def _meta(meta_dir: Path) -> dict:
    for f in meta_dir.glob("*"):
        try:
            return json.loads(f.read_text())
        except (ValueError, OSError):
            continue
    return {}


def read_arrays(state_dir: Path) -> dict[str, np.ndarray]:
    """Every array of a saved state by path (``params/hidden/0/kernel``), as numpy."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(state_dir.absolute())
    return {param_path(p): _host(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _host(value: Any) -> np.ndarray:
    if jax.dtypes.issubdtype(getattr(value, "dtype", np.float32), jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    return np.asarray(value)


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def load(
    state: Any, target: Any, reusable: tuple[str, ...], settings: InitFromConfig, frozen: tuple[str, ...] = ()
) -> Any:
    """``state`` with the source run's matching model variables loaded; prints the report, with
    the loaded paths that the ``frozen`` patterns (optimizer.freeze) keep as loaded.
    """
    state_dir = checkpoint_state_dir(settings.path)
    names = [param_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(state)]
    source = to_layout(read_arrays(state_dir), names)  # blocks stacked or unstacked (model.scan_layers)
    inc, exc = _patterns("include", settings.include), _patterns("exclude", settings.exclude)
    kinds = ("loaded", "excluded", "absent", "mismatched", "adapters")
    report: dict[str, list[str]] = {kind: [] for kind in kinds}

    def load(key_path: tuple, leaf: Any, spec: Any) -> Any:
        name = param_path(key_path)
        if name.split("/", 1)[0] not in reusable or _is_key(leaf):  # RNG streams stay fresh
            return leaf
        if not _chosen(name, inc, exc):
            report["excluded"].append(name)
            return leaf
        if name not in source:
            report["adapters" if lora.is_adapter(name) else "absent"].append(name)
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
    held = _patterns("frozen", frozen)
    report["frozen"] = [n for n in report["loaded"] if any(r.search(n.split("/", 1)[1]) for r in held)]
    _check(report, state_dir, settings.strict)
    _print_report(report, state_dir)
    return new


def selects(settings: InitFromConfig, name: str) -> bool:
    """Whether the include/exclude patterns of ``settings`` choose the variable ``name`` to load."""
    return _chosen(name, _patterns("include", settings.include), _patterns("exclude", settings.exclude))


def _chosen(name: str, include: list[re.Pattern], exclude: list[re.Pattern]) -> bool:
    return any(r.search(name) for r in include) and not any(r.search(name) for r in exclude)


def _patterns(key: str, patterns: Any) -> list[re.Pattern]:
    try:
        return [re.compile(p) for p in patterns]
    except (re.error, TypeError) as e:
        raise ConfigError(f"trainer.init_from.{key}={list(patterns)} holds an invalid regex: {e}") from None


def _check(report: dict, state_dir: Path, strict: bool) -> None:
    """A path the checkpoint lacks means another architecture: an error unless excluded. A shape
    that differs (a head for another number of classes) is re-initialised unless ``strict``.
    """
    if report["loaded"] and not report["absent"] and not (strict and report["mismatched"]):
        return
    parts = report["mismatched"][:8] + (
        [f"not in it: {', '.join(report['absent'][:8])}"] if report["absent"] else []
    )
    raise ConfigError(
        f"trainer.init_from: the checkpoint {state_dir} does not fit this model ({'; '.join(parts)}); "
        "choose a compatible run, or exclude those paths with trainer.init_from.exclude=[...]"
    )


def _print_report(report: dict, state_dir: Path) -> None:
    print(f"init_from {state_dir}:", flush=True)
    for kind in ("loaded", "frozen", "mismatched", "absent", "excluded", "adapters"):
        if report[kind]:
            reinit = " (re-initialised)" if kind in ("mismatched", "absent", "excluded", "adapters") else ""
            print(f"  {kind}{reinit} {len(report[kind])}: {', '.join(report[kind])}", flush=True)
