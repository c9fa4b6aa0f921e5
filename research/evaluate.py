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

import json
import sys
from pathlib import Path

from research import console
from research.errors import ConfigError

USAGE = (
    "usage: python -m research.evaluate run=<run dir> [checkpoint=best|latest|<step>] [split=test] "
    "[overrides]"
)


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The evaluate options (run, checkpoint, split) and the config overrides, from key=value args."""
    return console.key_values(argv, {"checkpoint": "best", "split": "test"}, (), USAGE, overrides=True)


def evaluate(run_dir: Path, checkpoint: str, split: str, overrides: list[str]) -> dict:
    """Restore ``checkpoint`` of ``run_dir`` and evaluate it on ``split``; returns what eval.json holds
    (the images go to ``<run dir>/plots/eval/``).
    """
    import numpy as np

    from research.experiment import open_saved

    opened = open_saved(run_dir, overrides, checkpoint)
    dataset = opened.built.dataset
    if dataset is not None and split not in dataset.splits:
        raise ConfigError(f"split={split!r}: the data has splits {sorted(dataset.splits)}")
    evaluators = {**opened.built.task.evaluators(), **opened.built.evaluators}
    outcome = opened.saved.evaluate(opened.state, opened.step, evaluators, split)
    write_images(Path(run_dir), outcome.images)
    arrays = {k: np.asarray(v).tolist() for k, v in outcome.arrays.items()}
    return {"checkpoint_step": opened.step, "split": split, **outcome.scalars, **arrays}


def write_images(run_dir: Path, images: dict) -> None:
    """An evaluation's images as ``<run dir>/plots/eval/<split>_<name>.png``."""
    from research.engine.writers import save_png

    for key, image in images.items():
        path = run_dir / "plots" / "eval" / f"{key.replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, image)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with console.report_errors():  # bad input, also inside a config's _target_, is one line
        options, overrides = parse(argv)
        run_dir = Path(options["run"]).expanduser()
        out = evaluate(run_dir, options["checkpoint"], options["split"], overrides)
    (run_dir / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
    console.print_summary({k: v for k, v in out.items() if not isinstance(v, list)})
    print(f"wrote {run_dir / 'eval.json'}")


if __name__ == "__main__":
    main()
