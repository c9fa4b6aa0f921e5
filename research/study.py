"""Read an Optuna study: ``python -m research.study runs/optuna/<study> [--top 10]``.

Prints the best trials (value, parameters, run directory) and how many completed, were
pruned or failed, and writes Optuna's matplotlib plots as PNGs to ``<dir>/study/``:
optimization history, parameter importances, parallel coordinates, intermediate values
(the validation metric of every trial at every evaluation: where pruned trials stopped).
The argument is the study's SQLite file, its folder, or a sweep folder inside it.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

from research.console import fail
from research.errors import UserError

STORAGE_FILE = "study.db"
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


def find_storage(path: Path) -> Path:
    """The SQLite file at ``path``, in it, or in a folder above (a sweep folder sits in its study's)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"no such file or directory: {path}")
    for folder in [path, *path.resolve().parents]:
        if (folder / STORAGE_FILE).is_file():
            return folder / STORAGE_FILE
    raise UserError(f"no {STORAGE_FILE} in {path} or above it: pass the study's folder or its {STORAGE_FILE}")


def load(path: Path, name: str | None = None):
    """The study in the storage ``find_storage(path)``; ``name`` chooses one when it holds several."""
    import optuna

    from research.sweep.storage import sqlite_storage

    storage = sqlite_storage(find_storage(path))
    names = optuna.get_all_study_names(storage)
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        raise UserError(f"choose a study with --study: {', '.join(names) or 'none in this storage'}")
    return optuna.load_study(study_name=name, storage=storage)


def best_trials(study, top: int) -> list:
    """Completed trials, best first."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.value, reverse=study.direction == StudyDirection.MAXIMIZE)[:top]


def report(study, top: int) -> str:
    """The counts by state and a Markdown table of the ``top`` best trials."""
    from collections import Counter

    counts = Counter(t.state.name.lower() for t in study.trials)
    lines = [
        f"study {study.study_name}: {len(study.trials)} trials ("
        + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        + f"), {study.direction.name.lower()}"
    ]
    trials = best_trials(study, top)
    if not trials:
        return "\n".join([*lines, "no trial has completed yet"])
    keys = sorted({k for t in trials for k in t.params})
    lines.append("| trial | value | " + " | ".join(keys) + " | run |")
    lines.append("|" + "---|" * (len(keys) + 3))
    for t in trials:
        cells = [_cell(t.params.get(k, "-")) for k in keys] + [t.user_attrs.get("run_dir", "-")]
        lines.append(f"| {t.number} | {t.value:.4g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot(study, out_dir: Path) -> tuple[list[Path], list[str]]:
    """(PNGs written, one line per plot that could not be drawn, e.g. importances of one trial)."""
    import optuna.visualization.matplotlib as ovm
    from optuna.exceptions import ExperimentalWarning

    from research.engine.plots import pyplot

    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                ax = getattr(ovm, f"plot_{name}")(study)
        except (ValueError, RuntimeError) as e:  # too few finished trials for this plot
            skipped.append(f"{name}: {e}")
            continue
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = out_dir / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written, skipped


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m research.study", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="the study's study.db, its folder, or a sweep folder in it")
    parser.add_argument("--study", help="the study's name, when the storage holds several")
    parser.add_argument("--top", type=int, default=10, help="how many of the best trials to list")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: <study folder>/study)")
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    try:
        study = load(args.path, args.study)
        print(report(study, args.top))
        if not args.no_plots:
            written, skipped = plot(study, args.out or find_storage(args.path).parent / "study")
            print("plots: " + ", ".join(str(p) for p in written))
            for line in skipped:
                print(f"not drawn: {line}")
    except UserError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
