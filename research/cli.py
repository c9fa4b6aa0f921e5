"""What the user sees: one-line errors, a preflight check of the overrides, the summary.

``preflight`` composes the config the way Hydra will, before Hydra starts, so a
bad override (unknown experiment, unknown key, wrong type, out-of-range value,
unwritable run directory) fails with one line and exit code 2, and nothing is
created or launched. In a multirun every value of every swept key is checked
before any job is submitted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sys
from pathlib import Path

from research.config import CONF_DIR
from research.errors import ConfigError, UserError

EXPERIMENTS_DIR = CONF_DIR / "experiment"
HYDRA_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--resolve",
    "--package",
    "-p",
    "--version",
}
EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 143
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextlib.contextmanager
def report_errors(exit_on_error: bool = True):
    """UserError -> one line on stderr; exit (single run) or let the sweep go on (multirun)."""
    from hydra.errors import InstantiationException

    from research.engine.preemption import Interrupted, Preempted

    try:
        yield
    except Interrupted as e:
        fail(str(e), EXIT_INTERRUPTED)
    except Preempted as e:
        fail(str(e), EXIT_PREEMPTED)
    except (UserError, InstantiationException) as e:
        error = e.__cause__ if isinstance(e, InstantiationException) else e
        if not isinstance(error, UserError):  # a bug, not bad input: keep the traceback
            raise
        if exit_on_error:
            fail(str(error))
        print(f"error: {error}", file=sys.stderr)


def available_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def _explain(error: Exception) -> str:
    """Hydra's multi-line composition errors, as one line that says what to change."""
    text = str(error).strip()
    if m := re.search(r"Could not override '([^']+)'", text):
        return (
            f"unknown config key '{m.group(1)}': check the spelling "
            f"(`python -m research.train --cfg job` prints every key), "
            f"or add a new key with +{m.group(1)}=..."
        )
    if m := re.search(r"Could not find '([^']+)/([^']+)'", text):
        group, name = m.group(1), m.group(2)
        options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)*)", text)
        names = ", ".join(o.strip() for o in options.group(1).splitlines() if o.strip()) if options else ""
        return f"no config '{name}' in group '{group}'" + (f": choose one of {names}" if names else "")
    if "Could not find" in text and "experiment" in text:
        return text.splitlines()[0]
    return text.splitlines()[0] if text else type(error).__name__


def _split_args(argv: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun, skip) where skip means Hydra answers a query flag itself."""
    flags = [a for a in argv if a.startswith("-")]
    skip = any(f.split("=")[0] in HYDRA_FLAGS for f in flags)
    multirun = "-m" in flags or "--multirun" in flags
    overrides = [a for a in argv if not a.startswith("-")]
    return overrides, multirun, skip


def _check_experiments(overrides: list[str]) -> None:
    known = available_experiments()
    for o in overrides:
        m = re.match(r"^\+?\+?experiment=(.*)$", o)
        if not m:
            continue
        for name in (n.strip() for n in m.group(1).split(",")):
            if name not in known:
                raise ConfigError(f"unknown experiment '{name}': choose one of {', '.join(known)}")


def _variants(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to compose: one, or (multirun) each value of each swept key once."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        if o.is_sweep_override() and not o.is_hydra_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    base = [c[0] for c in choices]
    variants = [base]
    for i, values in enumerate(choices):
        variants += [base[:i] + [v] + base[i + 1 :] for v in values[1:]]
    return variants


def _check_run_dir(cfg) -> None:
    from omegaconf import OmegaConf

    from research.engine.checkpoint import writable_or_raise

    run_dir = OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=False)
    if isinstance(run_dir, str) and "${" not in run_dir:
        writable_or_raise(Path(run_dir))


def preflight(argv: list[str] | None = None) -> None:
    """Validate the command line before Hydra runs anything; exit 2 with one line if it is bad."""
    argv = sys.argv[1:] if argv is None else argv
    overrides, multirun, skip = _split_args(argv)
    if skip:
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from research.config import check, register_resolvers

    register_resolvers()
    try:
        _check_experiments(overrides)
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            for variant in itertools.islice(_variants(overrides, multirun), 64):
                cfg = compose("train", overrides=variant, return_hydra_config=True)
                check(cfg)
                if not multirun:
                    _check_run_dir(cfg)
        if multirun:
            from research.launch.slurm import check_launcher

            check_launcher(cfg.hydra.launcher)  # e.g. a partition Slurm does not have
    except UserError as e:
        fail(str(e))
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        fail(_explain(e))


def print_summary(summary: dict) -> None:
    """The headline numbers on stdout (the full summary is in summary.json)."""
    keys = [
        k
        for k in summary
        if k.startswith(("test/", "eval/", "val/")) and not k.endswith(("_per_seed", "confusion_matrix"))
    ]
    keys += [
        "train/return",
        "steps",
        "best_step",
        "trace_s",
        "compile_s",
        "wall_s",
        "train/steps_per_s",
        "env_steps_per_s",
    ]
    shown = {k: summary[k] for k in keys if k in summary}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items()}, indent=1))
