"""python -m research.inspect: the table it prints and the PNG it writes, for a table of
one's own and an image dataset, and bad data as the same one line research.train prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import ROOT
from tests.test_data_table import frame

INCHES, DPI = 1.6, 100  # research/data/overview.py: PANEL_INCHES, IMAGE_DPI


def inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "research.inspect", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def class_rows(stdout: str, names: list[str]) -> dict[str, list[int]]:
    """{class: [train, val, test]} from the printed class table."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if (
            cells
            and cells[0] in names
            and len(cells) == 4
            and all(re.fullmatch(r"\d+", c) for c in cells[1:])
        ):
            rows[cells[0]] = [int(c) for c in cells[1:]]
    return rows


def test_a_table_prints_its_classes_per_split_and_draws_a_histogram_per_column(tmp_path: Path) -> None:
    table = frame(80)
    table.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "seen" / "t.png"
    proc = inspect(
        "data=table",
        f"data.path={tmp_path / 't.csv'}",
        "data.target=kind",
        "data.categorical=[colour]",
        f"out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = class_rows(proc.stdout, ["ant", "bee", "cat"])
    totals = table["kind"].value_counts()
    assert {name: sum(counts) for name, counts in rows.items()} == {
        n: int(totals[n]) for n in ("ant", "bee", "cat")
    }
    assert [sum(c[i] for c in rows.values()) for i in range(3)] == [58, 6, 16]  # 20% test, then 10% val
    assert "3 numeric" not in proc.stdout and "2 numeric features standardised" in proc.stdout
    # width, height, three one-hot colours and the target: 6 panels, 4 columns by 2 rows
    assert Image.open(out).size == (round(4 * INCHES * 1.5 * DPI), round(2 * INCHES * DPI))


def test_digits_prints_its_classes_and_draws_a_transformed_augmented_grid(tmp_path: Path) -> None:
    out = tmp_path / "digits.png"
    proc = inspect("+experiment=digits_cnn", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = class_rows(proc.stdout, [str(i) for i in range(10)])
    assert len(rows) == 10 and [sum(c[i] for c in rows.values()) for i in range(3)] == [1294, 144, 359]
    assert "as the model reads them, after the transform and any augmentation" in proc.stdout
    image = np.asarray(Image.open(out))
    assert image.shape[:2] == (round(6 * INCHES * DPI), round(6 * INCHES * DPI))  # 36 images, 6 x 6
    assert image[..., :3].std() > 20  # drawn, not blank


def test_bad_data_is_the_one_line_train_prints(tmp_path: Path) -> None:
    frame().to_csv(tmp_path / "t.csv", index=False)
    proc = inspect(
        "data=table", f"data.path={tmp_path / 't.csv'}", "data.target=knd", f"out={tmp_path / 'x.png'}"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().startswith("error: data.target='knd' is not a column of")
        and "\n" not in proc.stderr.strip()
    )
    assert not (tmp_path / "x.png").exists()


def test_an_image_folder_prints_its_class_folders_and_draws_them(tmp_path: Path) -> None:
    """data=image_folder (class folders of PNG files): the counts per class and the grid."""
    rng = np.random.default_rng(0)
    for name, count in (("circle", 12), ("square", 8)):
        (tmp_path / "shapes" / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "shapes" / name / f"{i}.png")
    out = tmp_path / "shapes.png"
    proc = inspect(
        "data=image_folder", f"data.path={tmp_path / 'shapes'}", "data.image_size=[10,10]", "data.workers=0",
        "data.batch_size=4", "data.test_fraction=0.25", f"data.cache_dir={tmp_path / 'cache'}", f"out={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = class_rows(proc.stdout, ["circle", "square"])
    assert {name: sum(counts) for name, counts in rows.items()} == {"circle": 12, "square": 8}
    assert rows["circle"][2] == 3 and rows["square"][2] == 2  # a quarter of each class carved as test
    columns = 4  # the train split's 13 images (20 less 5 test, 2 val): 4 columns by 4 rows
    assert Image.open(out).size == (round(columns * INCHES * DPI), round(4 * INCHES * DPI))
