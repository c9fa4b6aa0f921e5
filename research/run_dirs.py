"""Reading run directories, finished or not: their config, summary and records, and what differs.

``research.compare`` tabulates them; anything else that reads many runs offline starts here.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from research.engine.plots import SPREAD_SUFFIX, read_history
from research.errors import UserError

RUN_FILES = (".hydra/config.yaml", "summary.json", "metrics.jsonl")
FINAL_PREFIXES = ("test/", "val/", "eval/", "cv/")
EXTRA_FINAL = ("train/return",)
PER_REPLICA_SUFFIXES = ("_per_seed", "_per_fold")
# Config keys that differ without changing the numbers: how a convolution is computed.
NOISE_KEYS = ("*conv_impl",)
INTERPOLATION = "${"  # an unresolved interpolation: it differs only where what it names differs
MISSING = "-"
GRID_KEY = "trainer.vmap_over"
# What a grid's replicas read as once split: single runs of their value, which they equal.
UNGRIDDED = {GRID_KEY: None, "trainer.vmap_values": []}
PER_SEED = "_per_seed"


@dataclass
class Run:
    path: Path
    params: dict[str, Any]  # the config, flattened to dotted keys
    summary: dict[str, Any]  # empty while the run is unfinished
    history: list[dict] = field(default_factory=list)
    part: str = ""  # which replicas of the run's grid this is (``[learning_rate=0.01]``), if any

    @property
    def finished(self) -> bool:
        return bool(self.summary)

    def final(self, metric: str) -> list[float]:
        """The metric's final values, one per seed or fold: summary.json, else the last logged value."""
        for source in [self.summary, *(r for r in reversed(self.history) if metric in r)]:
            values = replica_values(source, metric)
            if values:
                return values
        return []

    def curve(self, metric: str) -> dict[int, list[float]]:
        """step -> the metric's values there, one per seed or fold."""
        out: dict[int, list[float]] = {}
        for record in self.history:
            values = replica_values(record, metric)
            if values:
                out.setdefault(int(record["step"]), []).extend(values)
        return out


def replica_values(record: dict, metric: str) -> list[float]:
    """One value per replica: ``<metric>_per_seed`` or ``_per_fold`` when recorded, else the value."""
    for suffix in PER_REPLICA_SUFFIXES:
        values = record.get(metric + suffix)
        if isinstance(values, list) and values and all(is_number(v) for v in values):
            return [float(v) for v in values]
    return [float(record[metric])] if is_number(record.get(metric)) else []


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def load_run(path: Path) -> Run:
    from omegaconf import OmegaConf

    config, summary = path / ".hydra" / "config.yaml", path / "summary.json"
    try:
        # Unresolved: interpolations stay as written, so equal ones compare equal.
        params = OmegaConf.to_container(OmegaConf.load(config), resolve=False) if config.exists() else {}
    except Exception as e:  # noqa: BLE001 - any parse failure is the same damaged file to the user
        raise UserError(f"{config} cannot be read ({type(e).__name__}): move that run aside") from None
    try:
        final = json.loads(summary.read_text()) if summary.exists() else {}
    except (OSError, ValueError) as e:
        raise UserError(f"{summary} cannot be read ({type(e).__name__}): move that run aside") from None
    return Run(
        path=path, params=_flatten(params), summary=final, history=read_history(path / "metrics.jsonl")
    )


def _natural_key(path: Path) -> list:
    """Sort key that puts job 2 before job 10; numeric and other names never compare directly."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts]


def find_runs(paths: Sequence[Path]) -> list[Run]:
    """Every run directory at or below the given paths (a sweep directory holds one per job)."""
    found: list[Path] = []
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"no such directory: {root}")
        before = len(found)
        stack = [root]
        while stack:
            d = stack.pop()
            if any((d / f).exists() for f in RUN_FILES):
                found.append(d)
                continue
            stack += [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
        if len(found) == before:
            holds = " or ".join(RUN_FILES)
            raise UserError(f"no run directories under {root}: a run directory holds {holds}")
    unique = sorted(set(found), key=_natural_key)
    return [part for p in unique for part in split_grid(load_run(p))]


def split_grid(run: Run) -> list[Run]:
    """A run that trained a grid in one program (``trainer.vmap_over``) as one run per grid
    value, holding that value's seeds: it compares with, and groups like, single runs.
    """
    key = run.params.get(GRID_KEY)
    replicas = run.summary.get(f"replicas/{key}") if key else None
    if not isinstance(replicas, list) or len(set(map(json.dumps, replicas))) < 2:
        return [run]
    parts = []
    for value in dict.fromkeys(replicas):
        keep = [i for i, v in enumerate(replicas) if v == value]
        parts.append(
            Run(
                path=run.path,
                params={**run.params, **UNGRIDDED, key: value},
                summary=_replicas(run.summary, keep, len(replicas)),
                history=[_replicas(r, keep, len(replicas)) for r in run.history],
                part=f"[{key.rsplit('.', 1)[-1]}={value}]",
            )
        )
    return parts


def _replicas(record: dict, keep: list[int], count: int) -> dict:
    """A record of the replicas ``keep`` alone: their values and mean; the spread of all goes."""
    out = dict(record)
    for name, values in record.items():
        if name.endswith(PER_SEED) and isinstance(values, list) and len(values) == count:
            metric = name[: -len(PER_SEED)]
            out[name] = [values[i] for i in keep]
            if all(is_number(v) for v in out[name]):
                out[metric] = sum(out[name]) / len(keep)
            out.pop(metric + SPREAD_SUFFIX, None)
    return out


def _is_noise(key: str, runs: Sequence[Run]) -> bool:
    """A key whose values are only interpolations or absent, or one of ``NOISE_KEYS``."""
    if any(fnmatch.fnmatch(key, pattern) for pattern in NOISE_KEYS):
        return True
    values = [r.params[key] for r in runs if key in r.params]
    return all(isinstance(v, str) and INTERPOLATION in v for v in values)


def differing_params(runs: Sequence[Run], ignore: Sequence[str] = (), all_keys: bool = False) -> list[str]:
    """Config keys whose values are not the same in every run, in config order; unless
    ``all_keys``, those that differ only in noise (``_is_noise``) are left out.
    """
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.params if k not in keys]
    keys = [k for k in keys if not any(fnmatch.fnmatch(k, pattern) for pattern in ignore)]
    differ = [
        k for k in keys if len({json.dumps(r.params.get(k, MISSING), sort_keys=True) for r in runs}) > 1
    ]
    return differ if all_keys else [k for k in differ if not _is_noise(k, runs)]


def _is_final_metric(key: str, value: Any) -> bool:
    named = key.startswith(FINAL_PREFIXES) or key in EXTRA_FINAL
    return named and is_number(value) and not key.endswith(SPREAD_SUFFIX)


def default_metrics(runs: Sequence[Run]) -> list[str]:
    """Final metrics present in any summary (or, for unfinished runs, the last record); a
    metric's ``_std`` is not one: the spread is computed from the samples.
    """
    names: list[str] = []
    for run in runs:
        for source in [run.summary, *run.history[-1:]]:
            names += [k for k, v in source.items() if k not in names and _is_final_metric(k, v)]
    order = {p: i for i, p in enumerate(FINAL_PREFIXES)}
    return sorted(names, key=lambda k: (order.get(k.split("/")[0] + "/", len(order)), k))
