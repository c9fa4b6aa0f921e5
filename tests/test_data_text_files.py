"""data=text_files as one of the own-data groups: a folder of one's own train/val/test texts, the
missing splits carved from the end of train.txt; research.inspect reads it like the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from research.data import corpus
from tests.conftest import ROOT

SMALL = {"context": 8, "stride": 4, "eval_stride": None, "batch_size": 2, "eval_batch_size": 4}


def config(**overrides: object) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/text_files.yaml"))
    return {**{k: v for k, v in cfg.items() if k != "_target_"}, **SMALL, **overrides}


def test_own_train_and_test_texts_with_val_carved_from_the_end_of_train(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("abcdefghij" * 40)  # 400 characters
    (tmp_path / "test.txt").write_text("zyxwvutsrq" * 5)
    dataset = corpus.load_text_files(**config(path=str(tmp_path), val_fraction=0.1))
    assert dataset.info["num_characters"] == {"train": 360, "val": 40, "test": 50}
    assert dataset.info["splits"] == {
        "train": "train.txt less its carved end",
        "val": "10% of train.txt, carved from its end",
        "test": "test.txt",
    }
    assert dataset.info["unknown_fraction"]["test"] == 1.0  # its letters never appear in train.txt


def test_inspect_prints_a_text_folders_splits_and_writes_its_histogram(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.txt").write_text(f"{split} text of my own. " * 20)
    out = tmp_path / "text.png"
    proc = subprocess.run(
        [sys.executable, "-m", "research.inspect", "data=text_files", f"data.path={tmp_path}",
         "data.context=16", "data.batch_size=4", f"out={out}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val    " in proc.stdout and "val.txt" in proc.stdout and "tokens" in proc.stdout
    assert out.stat().st_size > 1000
