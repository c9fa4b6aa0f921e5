"""Look before you train: ``python -m research.inspect data=<group> [overrides] [split=...] [out=...]``.

Composes the config exactly as ``research.train`` would (recipes, ``--config-dir`` and
``hydra.searchpath`` folders of one's own included), builds the data, prints its sizes per
split and class, its fields' shapes, dtypes and ranges, what the transform makes of a batch
and the normalisation used, and writes a PNG: a grid of a batch after the transform and
augmentation (images), or histograms of the features and the target (tables). Bad data is
the same one line ``research.train`` prints.

A command beside ``train`` (floor 7): it composes Hydra configs, which no part of
``research/data`` may do. It lived inside the data room as ``research.inspect`` until that
one file's import of ``cli`` tied the whole data room to the floors above it; what it shows is
``research/data/overview.py``, on the data floor.
"""

from __future__ import annotations

import sys
from pathlib import Path

from research.console import report_errors
from research.errors import UserError

USAGE = (
    "usage: python -m research.inspect data=<group> [overrides] [split=train|val|test] "
    "[out=<file.png>] [seed=0]"
)
OWN_KEYS = ("split", "out", "seed")  # this command's own arguments, not config overrides


def parse(argv: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """(config overrides, --config-dir folders, this command's own arguments)."""
    from research.cli import split_args

    overrides, _, _, config_dirs = split_args(argv)
    own = {}
    for item in list(overrides):
        key, _, value = item.partition("=")
        if key in OWN_KEYS:
            own[key] = value
            overrides.remove(item)
    return overrides, config_dirs, own


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    with report_errors():
        from research.cli import compose_checked  # train's composition and checks, errors as one line

        overrides, config_dirs, own = parse(argv)
        split, seed = own.get("split", "train"), int(own.get("seed", 0))
        cfg = compose_checked(overrides, False, config_dirs)
        if "_target_" not in (cfg.get("data") or {}):
            raise UserError("this config has no data (data=none): choose one with data=<group>")
        from hydra.utils import instantiate

        from research.data import overview

        dataset = instantiate(cfg.data, _convert_="all")
        if split not in dataset.splits:
            raise UserError(
                f"split={split} is not a split of {dataset.name}: choose one of {', '.join(dataset.splits)}"
            )
        print(overview.describe(dataset, split, seed))
        out = Path(own.get("out") or f"inspect_{dataset.name.replace(':', '_')}_{split}.png").expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        overview.save_png(overview.picture(dataset, split, seed), out)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
