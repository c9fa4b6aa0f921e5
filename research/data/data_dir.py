"""The TFDS data dir as a place to write: bundled and local datasets, fetched corpora and caches
are written there on first use, and a folder that cannot take them is one line naming the setting.
"""

from __future__ import annotations

import os
import tempfile

from research.errors import DataError

DEFAULT = "~/tensorflow_datasets"  # conf/data/*.yaml: ${oc.env:TFDS_DATA_DIR,'~/tensorflow_datasets'}


def check_writable(data_dir: str, what: str) -> None:
    """A DataError naming the setting to change when ``what`` cannot be written into ``data_dir``.

    Called just before a first write, never on the way to reading: a prepared dataset reads from
    a read-only folder. It tries a write rather than ``os.access``, which tells root that a
    read-only mount is writable.
    """
    try:
        os.makedirs(data_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as e:
        reason = "Not a directory" if isinstance(e, FileExistsError) else e.strerror or str(e)
        raise DataError(
            f"cannot write {what} into the TFDS data dir {data_dir} ({reason}): "
            f"set {_setting(data_dir)}=<a writable folder>"
        ) from None


def _setting(data_dir: str) -> str:
    """The setting that chose ``data_dir``: TFDS_DATA_DIR, or its default under HOME, else data.data_dir."""
    from_env = os.path.expanduser(os.environ.get("TFDS_DATA_DIR", DEFAULT))
    return "TFDS_DATA_DIR" if os.path.abspath(from_env) == os.path.abspath(data_dir) else "data.data_dir"
