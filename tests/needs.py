"""Skip markers for tests that need what an install may lack, each with the one reason CI accepts.

``.ci/check_skips.py`` matches these reasons exactly: a missing Fashion-MNIST or espeak-ng package
only where CI could not install it, a missing gymnax only in the newest-JAX leg (whose venv leaves
the rl extra out).
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from research.data import fashion_mnist

FASHION_MNIST_MISSING = "dataset-fashion-mnist is not installed"
GYMNAX_MISSING = "needs gymnax (the rl extra), which caps jax < 0.12"
ESPEAK_MISSING = "espeak-ng is not installed (apt-get install espeak-ng): it speaks the synthetic speech data"

fashion_mnist_files = pytest.mark.skipif(
    not fashion_mnist.idx_available(fashion_mnist.DEBIAN_IDX_DIR), reason=FASHION_MNIST_MISSING
)
HAVE_GYMNAX = importlib.util.find_spec("gymnax") is not None
gymnax = pytest.mark.skipif(not HAVE_GYMNAX, reason=GYMNAX_MISSING)
espeak_ng = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason=ESPEAK_MISSING)
