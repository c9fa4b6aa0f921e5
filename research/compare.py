"""Compare runs side by side, offline: ``python -m research.compare <run or sweep dirs>...``.

Reads what every run directory already holds (``.hydra/config.yaml``, ``summary.json``,
``metrics.jsonl``) and prints a table with a line per configuration and final metric: the
config values that differ between runs, the number of samples n, their mean, its bootstrap
interval, the interquartile mean and the sample std (``research.statistics``). Runs that
differ only by ``seed`` or ``trainer.num_seeds`` form one configuration (a run trained with
``trainer.num_seeds`` > 1 contributes each of its seeds; a ``trainer.vmap_over`` grid splits
into its values, each with its seeds); folds group like seeds (single-fold runs that differ
only by ``trainer.cv_fold``, and each fold of a ``trainer.cv_folds`` run). ``--versus K`` adds the
probability that a run of each configuration scores higher than a run of configuration K.
The table is also written as Markdown, LaTeX and CSV, beside one PNG of learning curves per
metric (the mean over the samples, its interval shaded). No network: W&B is the online
counterpart (group = the sweep).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from research import statistics, tables
from research.console import fail
from research.engine.plots import SPREAD_SUFFIX, Band, band_curves
from research.errors import UserError
from research.run_dirs import MISSING, Run, default_metrics, differing_params, find_runs, is_number

# Keys that say which samples a run drew, not what it trained: runs differing only in them are
# one configuration (the seed, how many seeds one program trained, the fold of a cross-validation).
SAMPLE_KEYS = ("seed", "trainer.num_seeds", "trainer.cv_fold")
TABLE_NAME = "table"  # <out>/table.md, table.tex, table.csv
DEFAULT_BOOTSTRAP = statistics.Bootstrap()
STD_HEADER = f"std (ddof={statistics.DDOF})"  # the one spread, named where it is shown


@dataclass
class Row:
    """Runs that share every differing config value except the seed (and the CV fold)."""

    number: int
    values: tuple[str, ...]
    runs: list[Run]

    def samples(self, metric: str) -> list[float]:
        return [v for run in self.runs for v in run.final(metric)]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> list[Row]:
    """One row per combination of ``keys`` values, numbered from 1; its runs differ only by seed."""
    rows: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        rows.setdefault(tuple(_show(run.params.get(k, MISSING)) for k in keys), []).append(run)
    return [Row(i, values, members) for i, (values, members) in enumerate(rows.items(), start=1)]


@dataclass
class Line:
    """One configuration's statistics for one metric."""

    row: Row
    metric: str
    stats: statistics.Summary
    versus: statistics.Improvement | None = None


@dataclass
class Report:
    keys: list[str]
    lines: list[Line]
    versus: int | None
    boot: statistics.Bootstrap
    root: Path
    notes: list[str] = field(default_factory=list)

    def _runs(self, row: Row) -> str:
        return ",".join(_short(r.path, self.root) + r.part + ("" if r.finished else "*") for r in row.runs)

    def header(self) -> list[str]:
        level = f"{self.boot.confidence:.0%}"
        versus = [f"P(> #{self.versus})"] if self.versus else []
        return ["#", *self.keys, "metric", "n", "mean", f"{level} CI", "IQM", STD_HEADER, *versus, "runs"]

    def cells(self) -> list[list[str]]:
        """The human-readable cells (Markdown, LaTeX)."""
        out = []
        for line in self.lines:
            s, v = line.stats, line.versus
            versus = [] if self.versus is None else [_interval_cell(v.p, v.low, v.high) if v else MISSING]
            spread = MISSING if s.std is None else f"{s.std:.2g}"
            interval = MISSING if s.low is None else f"[{_number(s.low)}, {_number(s.high)}]"
            out.append(
                [str(line.row.number), *line.row.values, line.metric, str(s.n), _number(s.mean)]
                + [interval, _number(s.iqm), spread, *versus, self._runs(line.row)]
            )
        return out

    def csv(self) -> str:
        """Every number at full precision, one column each (no brackets to parse)."""
        level = f"ci{round(100 * self.boot.confidence)}"
        spread = f"std_ddof{statistics.DDOF}"
        header = ["row", *self.keys, "metric", "n", "mean", f"{level}_low", f"{level}_high", "iqm", spread]
        if self.versus:
            p = f"p_gt_row{self.versus}"
            header += [p, f"{p}_{level}_low", f"{p}_{level}_high"]
        rows = []
        for line in self.lines:
            s, v = line.stats, line.versus
            row = [line.row.number, *line.row.values, line.metric, s.n, s.mean, s.low, s.high, s.iqm, s.std]
            if self.versus:
                row += [v.p, v.low, v.high] if v else [None] * 3
            rows.append(["" if x is None else x for x in row])
        runs = [self._runs(line.row) for line in self.lines]
        return tables.csv_text([*header, "runs"], [[*r, names] for r, names in zip(rows, runs, strict=True)])

    def legend(self) -> list[str]:
        """What the columns mean, with the numbers the intervals were drawn with."""
        b = self.boot
        out = [
            f"n: samples (seeds, folds, runs); mean and its {b.confidence:.0%} CI: percentile bootstrap "
            f"({b.resamples} resamples, seed {b.seed}); IQM: mean of the middle 50%; "
            f"std: sample std (ddof={statistics.DDOF})"
        ]
        if self.versus:
            out.append(
                f"P(> #{self.versus}): probability that a sample of the row is higher than one of row "
                f"#{self.versus} (Mann-Whitney U over the n x n pairs, ties 1/2), with its "
                f"{b.confidence:.0%} CI; for a metric where lower is better, improvement is 1 - P"
            )
        return out + self.notes

    def render(self, fmt: str) -> str:
        if fmt == "csv":
            return self.csv()
        if fmt == "latex":
            return "\n".join([tables.latex(self.header(), self.cells()), *(f"% {n}" for n in self.legend())])
        return "\n".join([tables.markdown(self.header(), self.cells()), *self.legend()])


def _number(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _interval_cell(value: float, low: float | None, high: float | None) -> str:
    return _number(value) if low is None else f"{_number(value)} [{_number(low)}, {_number(high)}]"


def _short(path: Path, root: Path) -> str:
    """A run's name relative to the folder that holds all runs compared (``3``, ``<sweep>/3``)."""
    return str(path.relative_to(root)) if path != root else path.name


def build_report(
    rows: Sequence[Row],
    keys: Sequence[str],
    metrics: Sequence[str],
    boot: statistics.Bootstrap,
    versus: int | None,
) -> Report:
    """The statistics of every row and metric, grouped by metric; rows without the metric are left out."""
    if versus is not None and not 1 <= versus <= len(rows):
        raise UserError(f"--versus {versus} is not a row: choose one of 1..{len(rows)}")
    paths = [r.path for row in rows for r in row.runs]
    root = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    lines = []
    for metric in metrics:
        reference = rows[versus - 1].samples(metric) if versus else []
        for row in rows:
            samples = row.samples(metric)
            if not samples:
                continue
            line = Line(row, metric, statistics.summarize(samples, boot))
            if reference and row.number != versus:
                line.versus = statistics.improvement(samples, reference, boot)
            lines.append(line)
    return Report(list(keys), lines, versus, boot, root)


def _label(row: Row, keys: Sequence[str]) -> str:
    if not keys:
        return f"#{row.number} " + ",".join(r.path.name + r.part for r in row.runs)
    return f"#{row.number} " + ", ".join(
        f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, row.values, strict=True)
    )


def curve_metrics(runs: Sequence[Run]) -> list[str]:
    """Every logged scalar but the spreads (``_std``: they are the bands)."""
    names: list[str] = []
    for run in runs:
        for record in run.history:
            names += [
                k
                for k, v in record.items()
                if k != "step" and k not in names and is_number(v) and not k.endswith(SPREAD_SUFFIX)
            ]
    return sorted(names)


def row_band(row: Row, metric: str, label: str, boot: statistics.Bootstrap) -> Band | None:
    """The row's mean per step over its seeds and folds, and the interval where all of them logged it."""
    by_step: dict[int, list[float]] = {}
    for run in row.runs:
        for step, values in run.curve(metric).items():
            by_step.setdefault(step, []).extend(values)
    if not by_step:
        return None
    steps = sorted(by_step)
    counts = [len(by_step[s]) for s in steps]
    band = Band(f"{label} (n={max(counts)})", steps, [float(np.mean(by_step[s])) for s in steps])
    full = [s for s in steps if len(by_step[s]) == max(counts)]
    # Where a run logged fewer steps (unfinished), no interval over all the samples exists.
    bounds = statistics.mean_bands(np.array([by_step[s] for s in full]).T, boot) if full == steps else None
    if bounds is not None:
        band.low, band.high = bounds
    return band


def plot_curves(
    rows: Sequence[Row], keys: Sequence[str], out_dir: Path, boot: statistics.Bootstrap
) -> list[Path]:
    """One PNG per logged metric: a line per row (the mean of its samples), its interval shaded."""
    out_dir.mkdir(parents=True, exist_ok=True)
    note = f"shaded: {boot.confidence:.0%} bootstrap CI of the mean"
    written = []
    for metric in curve_metrics([r for row in rows for r in row.runs]):
        bands = [b for row in rows if (b := row_band(row, metric, _label(row, keys), boot))]
        shaded = any(b.low is not None for b in bands)
        path = out_dir / (metric.replace("/", "_") + ".png")
        written.append(band_curves(bands, path, metric, note if shaded else ""))
    return written


def compare_report(
    paths: Sequence[Path],
    metrics: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    out_dir: Path | None = None,
    versus: int | None = None,
    boot: statistics.Bootstrap = DEFAULT_BOOTSTRAP,
    all_keys: bool = False,
) -> Report:
    """The report; with ``out_dir``, its tables (``table.md|tex|csv``) and the curve PNGs written there."""
    runs = find_runs(paths)
    keys = [k for k in differing_params(runs, ignore, all_keys) if k not in SAMPLE_KEYS]
    available = default_metrics(runs)
    chosen = list(metrics) if metrics else available
    unknown = [m for m in chosen if m not in available]
    if unknown:
        raise UserError(f"no runs report {', '.join(unknown)}: choose from {', '.join(available) or 'none'}")
    rows = group_runs(runs, keys)
    report = build_report(rows, keys, chosen, boot, versus)
    if any(not r.finished for r in runs):
        report.notes.append("* unfinished: the last logged values")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for fmt, suffix in (("markdown", "md"), ("latex", "tex"), ("csv", "csv")):
            (out_dir / f"{TABLE_NAME}.{suffix}").write_text(report.render(fmt) + "\n")
        report.notes.append(f"tables: {out_dir / TABLE_NAME}.md, .tex, .csv")
        written = plot_curves(rows, keys, out_dir, boot)
        if written:
            names = ", ".join(p.name for p in written)
            report.notes.append(f"plots: {len(written)} PNGs in {out_dir}: {names}")
    return report


def compare(paths: Sequence[Path], *args: Any, fmt: str = "markdown", **kwargs: Any) -> str:
    """The comparison as text in ``fmt`` (``compare_report``'s arguments)."""
    return compare_report(paths, *args, **kwargs).render(fmt)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m research.compare", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or sweep directories")
    parser.add_argument(
        "--metrics",
        help="comma-separated final metrics to show (default: every test/, val/, eval/ and cv/ metric)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        help="config keys to leave out of the comparison (glob, repeatable), e.g. 'logger.*'",
    )
    parser.add_argument(
        "--all-keys",
        action="store_true",
        help="keep keys that differ only in noise (conv_impl, ${...} interpolations)",
    )
    parser.add_argument("--versus", type=int, metavar="K", help="add P(a sample of each row > one of row K)")
    parser.add_argument(
        "--format", choices=tables.FORMATS, default="markdown", help="how the table is printed"
    )
    defaults = DEFAULT_BOOTSTRAP
    parser.add_argument("--confidence", type=float, default=defaults.confidence, help="interval level")
    parser.add_argument("--resamples", type=int, default=defaults.resamples, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="bootstrap seed")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the tables and PNGs go (default: <dir>/compare for one directory, ./compare for several)",
    )
    parser.add_argument("--no-plots", action="store_true", help="print the table only: write no files")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    out = (
        None
        if args.no_plots
        else (args.out or (args.paths[0] / "compare" if len(args.paths) == 1 else Path("compare")))
    )
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    try:
        if not 0 < args.confidence < 1 or args.resamples < 1:
            raise UserError("--confidence must lie in (0, 1) and --resamples be >= 1")
        boot = statistics.Bootstrap(args.confidence, args.resamples, args.seed)
        report = compare_report(args.paths, metrics, args.ignore, out, args.versus, boot, args.all_keys)
    except UserError as e:
        fail(str(e))
    print(report.render(args.format))
    if args.format == "csv":  # stdout stays one CSV table; what it was drawn with goes beside it
        print("\n".join(report.legend()), file=sys.stderr)


if __name__ == "__main__":
    main()
