"""``python -m research.train --help``: every recipe with its summary and every group's options,
read from the config folders (a user's own first)."""

from __future__ import annotations

from pathlib import Path

from research.cli import available_experiments
from research.paths import CONF_DIR
from research.usage import usage


def test_every_recipe_is_listed_with_the_first_line_of_its_header() -> None:
    text = usage()
    for name in available_experiments():
        header = (CONF_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()[1].lstrip("# ")
        line = next(line for line in text.splitlines() if line.split()[:1] == [name])
        assert line.split(None, 1)[1].rstrip(".")[:40] == header[:40], (name, line)
    assert "optimizer/schedule: constant" in text and "\n  hydra" not in text


def test_a_users_config_dir_adds_its_groups_and_shadows_ours(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "my_net.yaml").write_text("_target_: my.Net\n")
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "digits_mlp.yaml").write_text("# @package _global_\n# Mine, not yours.\n")
    text = usage([str(tmp_path)])
    groups = text.split("Config groups")[1]
    assert "my_net" in groups.split("\n  model:")[1].split("\n  optimizer:")[0]
    assert any(line.split() == ["digits_mlp", "Mine,", "not", "yours."] for line in text.splitlines())
