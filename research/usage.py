"""``python -m research.train --help``: the recipes and config groups, read from the config folders.

Hydra's own help composes the config once per group option to list them (about a second for
this tree, and growing with it); this one reads the folders, so it answers at once and can
say what each recipe is, from the first line of its header. ``--hydra-help`` is Hydra's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from research.paths import CONF_DIR

WIDTH = 100  # characters a line of the listing may take
HIDDEN = ("hydra",)  # groups that configure Hydra itself, listed under --hydra-help

USAGE = """\
usage: python -m research.train [+experiment=<recipe>] [<group>=<option> ...] [<key>=<value> ...]
                                [-m] [--config-dir DIR] [--cfg job] [--hydra-help]

  -m                 a sweep: comma-separated values, or hparams_search=<search>
  --config-dir DIR   your own config groups and recipes (DIR/<group>/<option>.yaml), beside these
  --cfg job          print the composed config and exit; trainer.dry_run=true plans memory and FLOPs
  other commands     research.evaluate, export, sample, generate, compare, study, inspect (each --help)
"""


def usage(config_dirs: Sequence[str] = ()) -> str:
    """The help text: usage, then every recipe with its one-line summary, then every group's options."""
    roots = [Path(d).expanduser() for d in config_dirs] + [CONF_DIR]
    recipes = _options(roots, "experiment")
    lines = [USAGE, "Recipes (+experiment=<recipe>):"]
    width = max(map(len, recipes), default=0)
    lines += [_cut(f"  {name:<{width}}  {_summary(path)}") for name, path in recipes.items()]
    lines += ["", "Config groups (<group>=<option>):"]
    for group in _groups(roots):
        lines += _wrapped(f"  {group}: ", ", ".join(_options(roots, group)))
    return "\n".join(lines)


def _groups(roots: list[Path]) -> list[str]:
    """Every group folder, nested ones as ``optimizer/schedule``."""
    found = {p.relative_to(root).as_posix() for root in roots if root.is_dir() for p in root.rglob("*/")}
    return sorted(g for g in found if g.split("/")[0] not in ("experiment", *HIDDEN))


def _options(roots: list[Path], group: str) -> dict[str, Path]:
    """Option name -> its file; a user's folder (listed first) shadows ours, as in Hydra's search path."""
    found: dict[str, Path] = {}
    for root in roots:
        for path in sorted((root / group).glob("*.yaml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def _summary(recipe: Path) -> str:
    """The first comment line after ``# @package``: what the recipe trains, in its own words."""
    for line in recipe.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and "@package" not in text:
            return text.lstrip("# ").strip()
        if text and not text.startswith("#"):
            break
    return ""


def _cut(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


def _wrapped(head: str, text: str) -> list[str]:
    """``head`` then ``text`` broken at commas into lines of WIDTH, continuation lines indented."""
    lines, line = [], head
    for word in text.split(" "):
        if len(line) + len(word) > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = " " * len(head)
        line += word + " "
    return [*lines, line.rstrip()]
