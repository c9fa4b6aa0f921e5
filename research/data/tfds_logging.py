"""Keep TFDS's warnings about missing folders out of the console where we say it better."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def absl_errors_only() -> Iterator[None]:
    """Silence absl (TFDS's logger) below ERROR for the block: e.g. "Variant folder ...
    has no dataset_info.json", logged each time TFDS checks a dataset not built yet."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)
