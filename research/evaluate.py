"""Evaluate a saved run: ``python -m research.evaluate run=<run dir> [checkpoint=best|latest|<step>]
[split=test] [data=<name>] [+evaluators=<name>|[<a>,<b>]] [<key>=<value> ...]``.

The run is rebuilt from its own saved config (``.hydra/config.yaml``); ``data=``-style
group choices and dotted overrides change it (another dataset, a larger eval batch).
The chosen checkpoint is restored and the run's evaluators (the task's own plus
``evaluators``) run on the split. Results go to ``<run dir>/eval.json`` and the
images to ``<run dir>/plots/eval/``; on a finished run, ``split=test`` with the best
checkpoint reproduces the test metrics of its ``summary.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from research import console

USAGE = (
    "usage: python -m research.evaluate run=<run dir> [checkpoint=best|latest|<step>] [split=test] "
    "[overrides]"
)


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The evaluate options (run, checkpoint, split) and the config overrides, from key=value args."""
    return console.key_values(argv, {"checkpoint": "best", "split": "test"}, (), USAGE, overrides=True)


def evaluate(run_dir: Path, checkpoint: str, split: str, overrides: list[str]) -> dict:
    """Restore ``checkpoint`` of ``run_dir`` and evaluate it on ``split``; returns what eval.json holds
    (written with it; the images go to ``<run dir>/plots/eval/``).
    """
    from research.experiment import evaluate_saved

    return evaluate_saved(run_dir, checkpoint, split, overrides)


def write_images(run_dir: Path, images: dict) -> None:
    """An evaluation's images as ``<run dir>/plots/eval/<split>_<name>.png``."""
    from research.experiment import write_images as write

    write(run_dir, images)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with console.report_errors():  # bad input, also inside a config's _target_, is one line
        options, overrides = parse(argv)
        run_dir = Path(options["run"]).expanduser()
        out = evaluate(run_dir, options["checkpoint"], options["split"], overrides)
    console.print_summary({k: v for k, v in out.items() if not isinstance(v, list)})
    print(f"wrote {run_dir / 'eval.json'}")


if __name__ == "__main__":
    main()
