"""Where the project's own files are: the config tree the commands compose from."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
