"""Fail CI when a test skipped for a reason CI does not allow.

Reads the ``-rs`` summary of a saved pytest run (``SKIPPED [n] path:line: reason``). A machine
without an accelerator may skip what needs one. Only where CI cannot set the machine up (not root,
or no apt), ``--unprovisioned``, may tests also skip for a missing Slurm cluster, a missing Debian
package (the Fashion-MNIST data, espeak-ng), or needing root. Only in the newest-JAX leg
(``make test-newest``, whose venv leaves out the rl extra because gymnax caps jax < 0.12),
``--newest-jax``, may tests skip for gymnax.

    python3 .ci/check_skips.py pytest-output.txt [--unprovisioned] [--newest-jax]
"""

from __future__ import annotations

import argparse
import re
import sys

ALWAYS = [r"\b(GPU|TPU|accelerator)s?\b"]
UNPROVISIONED = [
    r"\bSlurm\b",
    r"^dataset-fashion-mnist is not installed$",
    r"^espeak-ng is not installed",
    r"needs root",
]
NEWEST_JAX = [r"^needs gymnax \(the rl extra\), which caps jax < 0\.12$"]
SKIPPED = re.compile(r"^SKIPPED \[\d+\] (?P<where>\S+): (?P<reason>.*)$")


def disallowed(lines: list[str], unprovisioned: bool, newest_jax: bool = False) -> list[str]:
    """The skip summary lines whose reason matches no allowed pattern."""
    allowed = ALWAYS + (UNPROVISIONED if unprovisioned else []) + (NEWEST_JAX if newest_jax else [])
    found = (SKIPPED.match(line.rstrip("\n")) for line in lines)
    return [m.group(0) for m in found if m and not any(re.search(p, m["reason"]) for p in allowed)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the saved output of pytest -rs")
    parser.add_argument("--unprovisioned", action="store_true", help="CI could not install what tests need")
    parser.add_argument("--newest-jax", action="store_true", help="the leg without gymnax (make test-newest)")
    args = parser.parse_args(argv)
    with open(args.log, errors="replace") as f:
        bad = disallowed(f.readlines(), args.unprovisioned, args.newest_jax)
    if bad:
        print("ci: tests skipped for reasons CI does not allow:", *bad, sep="\n  ", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
