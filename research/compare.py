"""Compare runs side by side, offline: ``python -m research.compare <run or sweep dirs>...``.

Reads what every run directory already holds (``.hydra/config.yaml``, ``summary.json``,
``metrics.jsonl``), prints a Markdown table of the config values that differ between
runs with their final metrics, and writes one PNG of learning curves per metric.
Runs that differ only by ``seed`` form one row: mean +- sample std over the seeds (a
run trained with ``trainer.num_seeds`` > 1 contributes each of its seeds). Folds group
like seeds: single-fold runs that differ only by ``trainer.cv_fold`` form one row, and a
``trainer.cv_folds`` run contributes each of its folds.
No network: W&B is the online counterpart (group = the sweep).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from research.console import fail
from research.engine.plots import pyplot, read_history
from research.errors import UserError

RUN_FILES = (".hydra/config.yaml", "summary.json", "metrics.jsonl")
SEED_KEY = "seed"
FOLD_KEY = "trainer.cv_fold"  # grouped like the seed: the folds of one cross-validation
FINAL_PREFIXES = ("test/", "val/", "eval/", "cv/")
EXTRA_FINAL = ("train/return",)
PER_SEED_SUFFIX = "_per_seed"
PER_FOLD_SUFFIX = "_per_fold"
MISSING = "-"


@dataclass
class Run:
    path: Path
    params: dict[str, Any]  # the config, flattened to dotted keys
    summary: dict[str, Any]  # empty while the run is unfinished
    history: list[dict] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.summary)

    def final(self, metric: str) -> list[float]:
        """The metric's final values, one per seed or fold: summary.json, else the last logged value."""
        for suffix in (PER_SEED_SUFFIX, PER_FOLD_SUFFIX):
            values = self.summary.get(metric + suffix)
            if isinstance(values, list) and values and all(_is_number(v) for v in values):
                return [float(v) for v in values]
        if _is_number(self.summary.get(metric)):
            return [float(self.summary[metric])]
        for record in reversed(self.history):
            if _is_number(record.get(metric)):
                return [float(record[metric])]
        return []


@dataclass
class Row:
    """Runs that share every differing config value except the seed (and the CV fold)."""

    values: tuple[str, ...]
    runs: list[Run]

    def samples(self, metric: str) -> list[float]:
        return [v for run in self.runs for v in run.final(metric)]


def _is_number(value: Any) -> bool:
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
    return [load_run(p) for p in unique]


def differing_params(runs: Sequence[Run], ignore: Sequence[str] = ()) -> list[str]:
    """Config keys whose values are not the same in every run, in config order."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.params if k not in keys]
    keys = [k for k in keys if not any(fnmatch.fnmatch(k, pattern) for pattern in ignore)]
    return [k for k in keys if len({json.dumps(r.params.get(k, MISSING), sort_keys=True) for r in runs}) > 1]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> list[Row]:
    """One row per combination of ``keys`` values; its runs differ only by seed."""
    rows: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        rows.setdefault(tuple(_show(run.params.get(k, MISSING)) for k in keys), []).append(run)
    return [Row(values, members) for values, members in rows.items()]


def default_metrics(runs: Sequence[Run]) -> list[str]:
    """Final metrics present in any summary (or, for unfinished runs, the last record)."""
    names: list[str] = []
    for run in runs:
        for source in [run.summary, *run.history[-1:]]:
            names += [
                k
                for k, v in source.items()
                if k not in names and _is_number(v) and (k.startswith(FINAL_PREFIXES) or k in EXTRA_FINAL)
            ]
    order = {p: i for i, p in enumerate(FINAL_PREFIXES)}
    return sorted(names, key=lambda k: (order.get(k.split("/")[0] + "/", len(order)), k))


def mean_std(samples: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); no std for a single value."""
    n = len(samples)
    mean = sum(samples) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in samples) / (n - 1))


def _number(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def format_cell(samples: Sequence[float]) -> str:
    if not samples:
        return MISSING
    mean, std = mean_std(samples)
    return _number(mean) if std is None else f"{_number(mean)} ± {std:.2g}"


def _short(path: Path, root: Path) -> str:
    """A run's name relative to the folder that holds all runs compared (``3``, ``<sweep>/3``)."""
    return str(path.relative_to(root)) if path != root else path.name


def table(rows: Sequence[Row], keys: Sequence[str], metrics: Sequence[str]) -> str:
    """A Markdown table: differing config values, seed count, metrics, and the runs of each row."""
    paths = [r.path for row in rows for r in row.runs]
    root = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    header = [*keys, "n", *metrics, "runs"]
    lines = []
    for row in rows:
        names = ",".join(_short(r.path, root) + ("" if r.finished else "*") for r in row.runs)
        count = max([len(row.samples(m)) for m in metrics] + [len(row.runs)])
        lines.append([*row.values, str(count), *(format_cell(row.samples(m)) for m in metrics), names])
    widths = [max(len(c) for c in column) for column in zip(header, *lines, strict=True)]
    out = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
        for cells in [header, ["-" * w for w in widths], *lines]
    ]
    return "\n".join(out)


def _label(row: Row, keys: Sequence[str]) -> str:
    if not keys:
        return ",".join(r.path.name for r in row.runs)
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, row.values, strict=True))


def curve_metrics(runs: Sequence[Run]) -> list[str]:
    names: list[str] = []
    for run in runs:
        for record in run.history:
            names += [k for k, v in record.items() if k != "step" and k not in names and _is_number(v)]
    return sorted(names)


def plot_curves(rows: Sequence[Row], keys: Sequence[str], out_dir: Path) -> list[Path]:
    """One PNG per logged metric: a line per row (mean over its seeds) and a +-std band."""
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in curve_metrics([r for row in rows for r in row.runs]):
        fig, ax = plt.subplots(figsize=(6, 4))
        for row in rows:
            by_step: dict[int, list[float]] = {}
            for run in row.runs:
                for record in run.history:
                    if _is_number(record.get(metric)):
                        by_step.setdefault(int(record["step"]), []).append(float(record[metric]))
            if not by_step:
                continue
            steps = sorted(by_step)
            stats = [mean_std(by_step[s]) for s in steps]
            means = [m for m, _ in stats]
            (line,) = ax.plot(steps, means, label=_label(row, keys), marker="." if len(steps) < 30 else None)
            if any(sd is not None for _, sd in stats):
                lo = [m - (sd or 0.0) for m, sd in stats]
                hi = [m + (sd or 0.0) for m, sd in stats]
                ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / (metric.replace("/", "_") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def compare(
    paths: Sequence[Path],
    metrics: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    out_dir: Path | None = None,
) -> str:
    """The comparison table (returned) and, when ``out_dir`` is given, the curve PNGs in it."""
    runs = find_runs(paths)
    keys = [k for k in differing_params(runs, ignore) if k not in (SEED_KEY, FOLD_KEY)]
    available = default_metrics(runs)
    chosen = list(metrics) if metrics else available
    unknown = [m for m in chosen if m not in available]
    if unknown:
        raise UserError(f"no runs report {', '.join(unknown)}: choose from {', '.join(available) or 'none'}")
    rows = group_runs(runs, keys)
    text = table(rows, keys, chosen)
    if any(not r.finished for r in runs):
        text += "\n* unfinished: the last logged values"
    if out_dir is not None:
        written = plot_curves(rows, keys, out_dir)
        if written:
            text += f"\nplots: {', '.join(str(p) for p in written)}"
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m research.compare", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or sweep directories")
    parser.add_argument(
        "--metrics",
        help="comma-separated final metrics to show (default: every test/, val/ and eval/ metric)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        help="config keys to leave out of the comparison (glob, repeatable), e.g. 'logger.*'",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where the PNGs go (default: <dir>/compare for one directory, ./compare for several)",
    )
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    out = (
        None
        if args.no_plots
        else (args.out or (args.paths[0] / "compare" if len(args.paths) == 1 else Path("compare")))
    )
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    try:
        print(compare(args.paths, metrics=metrics, ignore=args.ignore, out_dir=out))
    except UserError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
