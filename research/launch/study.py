"""Where an Optuna search keeps its trials, so that an interrupted search continues.

The hparams_search configs point ``hydra.sweeper.storage`` here. The sweeper opens
the storage before any job runs (and before Hydra creates the sweep directory), so
the SQLite file's folder is created first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna


def sqlite_storage(path: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage in the SQLite file ``path`` (relative to the launch directory)."""
    import optuna

    db = Path(path).expanduser().absolute()
    db.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{db}")
