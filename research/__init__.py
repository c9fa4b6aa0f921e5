"""research: a JAX experiment framework (Hydra configs, Flax NNX models, optax, one compiled loop).

``research.Experiment`` is the framework as a Python object (``research/api.py``), loaded on
first use so that ``import research`` stays light.
"""

from typing import Any

__all__ = ["Experiment"]


def __getattr__(name: str) -> Any:
    if name == "Experiment":
        from research.api import Experiment

        return Experiment
    raise AttributeError(f"module 'research' has no attribute {name!r}")
