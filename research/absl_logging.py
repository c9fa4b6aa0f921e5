"""Keep absl warnings (the logger of TFDS and Orbax) out of the console where they say nothing
the user can act on, or where we say it better."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def absl_errors_only() -> Iterator[None]:
    """Silence absl below ERROR for the block: e.g. TFDS's "Variant folder ... has no
    dataset_info.json", logged each time it checks a dataset not built yet, or Orbax announcing
    that a checkpoint directory is opened read-only."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)
