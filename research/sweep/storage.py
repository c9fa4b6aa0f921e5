"""Where an Optuna search keeps its trials, so that an interrupted search continues.

``hydra.sweeper.storage`` is a SQLite file (a path, relative to the launch directory)
or any database URL Optuna takes (``postgresql://...``); null keeps the study in
memory, gone when the sweep ends. Several searches started on the same storage share
one study: every trial is a row there, so none is lost and none is run twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

# Seconds a writer waits for another process's lock on the SQLite file (SQLite's default, 5 s,
# is short for several workers that write at the same moments: the end of each evaluation).
SQLITE_LOCK_TIMEOUT_S = 60


def sqlite_storage(path: str | Path) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage in the SQLite file ``path``; its folder is created first.

    Opening a new file creates its tables; two workers doing that at once collide (a
    UNIQUE constraint on Optuna's schema version), so the opening holds a file lock.
    """
    import fcntl

    import optuna

    db = Path(path).expanduser().absolute()
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return optuna.storages.RDBStorage(
            f"sqlite:///{db}", engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
        )


def open_storage(spec: str | None) -> optuna.storages.BaseStorage | None:
    """The storage ``hydra.sweeper.storage`` names: a database URL, a SQLite file path, or None (memory)."""
    if spec is None:
        return None
    if "://" in spec:
        import optuna

        return optuna.storages.RDBStorage(spec)
    return sqlite_storage(spec)
