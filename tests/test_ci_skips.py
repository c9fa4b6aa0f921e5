""".ci/check_skips.py: which pytest skip reasons fail CI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests import needs
from tests.conftest import ROOT

SCRIPT = ROOT / ".ci" / "check_skips.py"
spec = importlib.util.spec_from_file_location("check_skips", SCRIPT)
check_skips = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_skips)

OUTPUT = f"""\
........s.s.s                                                            [100%]
=========================== short test summary info ============================
SKIPPED [1] tests/test_precision.py:12: needs a GPU: bfloat16 matmuls on CUDA
SKIPPED [3] tests/test_slurm.py:64: the Slurm cluster is down (): bash slurm/local-cluster.sh start
SKIPPED [2] tests/test_data_fashion_mnist.py:20: dataset-fashion-mnist is not installed
SKIPPED [1] tests/test_speech.py:20: {needs.ESPEAK_MISSING}
SKIPPED [1] tests/test_faults.py:98: mounting a tmpfs needs root
SKIPPED [1] tests/test_cli_errors.py:86: root cannot mount a read-only tmpfs here: permission denied
40 passed, 8 skipped in 61.20s
"""


def test_a_provisioned_machine_allows_only_a_missing_accelerator():
    bad = check_skips.disallowed(OUTPUT.splitlines(), unprovisioned=False)
    assert [line.split("]")[1].split(":")[0].strip() for line in bad] == [
        "tests/test_slurm.py",
        "tests/test_data_fashion_mnist.py",
        "tests/test_speech.py",
        "tests/test_faults.py",
        "tests/test_cli_errors.py",
    ]


def test_an_unprovisioned_machine_also_allows_what_ci_could_not_install():
    bad = check_skips.disallowed(OUTPUT.splitlines(), unprovisioned=True)
    assert bad == [
        "SKIPPED [1] tests/test_cli_errors.py:86: root cannot mount a read-only tmpfs here: permission denied"
    ]


def test_the_script_fails_with_the_lines_it_refuses(tmp_path):
    log = tmp_path / "out.txt"
    log.write_text(OUTPUT)
    refused = subprocess.run([sys.executable, SCRIPT, log], capture_output=True, text=True)
    assert refused.returncode == 1 and "dataset-fashion-mnist is not installed" in refused.stderr
    log.write_text("\n".join(line for line in OUTPUT.splitlines() if "GPU" in line or "SKIPPED" not in line))
    assert subprocess.run([sys.executable, SCRIPT, log]).returncode == 0


def _skipped(reason: str) -> list[str]:
    return [f"SKIPPED [4] tests/test_rl_tasks.py:128: {reason}"]


def test_only_the_newest_jax_leg_may_skip_for_gymnax():
    gymnax = _skipped(needs.GYMNAX_MISSING)
    for unprovisioned in (False, True):
        assert check_skips.disallowed(gymnax, unprovisioned) == gymnax
        assert check_skips.disallowed(gymnax, unprovisioned, newest_jax=True) == []
    fashion = _skipped(needs.FASHION_MNIST_MISSING)
    assert check_skips.disallowed(fashion, unprovisioned=False, newest_jax=True) == fashion
    assert check_skips.disallowed(_skipped(f"{needs.GYMNAX_MISSING}: other"), False, newest_jax=True)


def test_the_markers_give_the_reasons_ci_allows_where_unprovisioned():
    fashion = _skipped(needs.FASHION_MNIST_MISSING)
    assert check_skips.disallowed(fashion, unprovisioned=True) == []
    assert check_skips.disallowed(fashion, unprovisioned=False) == fashion


def test_the_newest_jax_flag_reaches_the_check(tmp_path):
    log = tmp_path / "out.txt"
    log.write_text("\n".join(_skipped(needs.GYMNAX_MISSING)) + "\n")
    assert subprocess.run([sys.executable, SCRIPT, log], capture_output=True).returncode == 1
    assert subprocess.run([sys.executable, SCRIPT, log, "--newest-jax"]).returncode == 0
